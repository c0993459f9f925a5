"""Sky noise of image stamps, measured when a folder is prepared, and ``flux_scale: auto``.

The estimator (:func:`sky_noise`): per band, the pixels of a border ring of each stamp
(``border`` pixels wide, away from the central object), each stamp's ring minus its own
median (a residual sky pedestal that differs from stamp to stamp does not count as noise),
pooled over the stamps, then iteratively 3-sigma clipped with the median absolute deviation
as the scale, and ``1.4826 * MAD`` of what is left (astropy's ``sigma_clipped_stats`` with
``stdfunc="mad_std"``). The MAD ignores up to half of the pixels being source light (a
neighbour or a large galaxy reaching the ring); clipping first removes the bright tail, so
the sources that remain bias it by well under a percent; the ring keeps the central
object, whose shot noise is not sky noise, out. Of pure Gaussian noise it returns sigma to
the sampling error (about ``1.2 / sqrt(n)`` relative, for ``n`` pixels).

A shard records the estimate of (a sample of) its stamps; the manifest keeps the median over
shards (``band_stats[field]["noise"]``, one number per band), and
:func:`resolve_flux_scales` turns ``flux_scale: auto`` into those numbers at training time,
so that the saved model's config carries them: a model keeps the units it was trained in.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from astropt.config import ModalityConfig, ModelConfig
from astropt.errors import ConfigError, DataError

log = logging.getLogger(__name__)

NOISE_SAMPLE = 256
"""Stamps per shard the noise is measured on (evenly spaced): ~250k ring pixels per band."""


def border_width(size: int) -> int:
    """Width (pixels) of the ring a ``size``-pixel stamp's noise is measured in: 1/16 of it, >= 2."""
    return max(2, size // 16)


def border_pixels(images: np.ndarray, border: int) -> np.ndarray:
    """Ring pixels of ``(n, C, H, W)`` stamps, each stamp's ring minus its median: ``(C, n * ring)``."""
    n, c, h, w = images.shape
    ring = np.ones((h, w), dtype=bool)
    ring[border : h - border, border : w - border] = False
    pixels = images[:, :, ring]  # (n, C, ring)
    pixels = pixels - np.median(pixels, axis=-1, keepdims=True)
    return pixels.transpose(1, 0, 2).reshape(c, -1)


def sky_noise(images: np.ndarray, border: int | None = None) -> list[float]:
    """Robust per-band sky noise sigma of ``(n, C, H, W)`` stamps (see the module docstring)."""
    from astropy.stats import sigma_clipped_stats  # only when stamps are measured: a slow import

    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 4 or min(images.shape[2:]) < 8:
        raise ValueError(f"sky_noise needs stamps of shape (n, C, H, W) of at least 8x8 pixels, got {images.shape}")
    pixels = border_pixels(images, border or border_width(min(images.shape[2:])))
    sigmas = []
    for band in pixels:
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            sigmas.append(float("nan"))
            continue
        _, _, std = sigma_clipped_stats(finite, sigma=3.0, maxiters=5, cenfunc="median", stdfunc="mad_std")
        sigmas.append(float(std))
    return sigmas


def sample_noise(images: np.ndarray, sample: int = NOISE_SAMPLE) -> list[float]:
    """:func:`sky_noise` of at most ``sample`` evenly spaced stamps of ``images``."""
    step = max(1, len(images) // sample)
    return sky_noise(images[::step][:sample])


def pooled_noise(per_shard: list[list[float]]) -> list[float]:
    """One number per band from the shards' estimates: their median (robust to an odd shard)."""
    return np.nanmedian(np.asarray(per_shard, dtype=np.float64), axis=0).tolist()


# ----------------------------------------------------------------------------- flux_scale: auto


def measured_noise(band_stats: dict[str, dict[str, list[float]]], modality: ModalityConfig, where: str) -> list[float]:
    """The manifest's sky noise of ``modality``'s image field, one positive number per band."""
    noise = band_stats.get(modality.field, {}).get("noise")
    if noise is None:
        raise DataError(
            f"{where}: the manifest has no sky-noise estimate of {modality.field!r} (prepared by an older "
            f"version); prepare the folder again, or give modality {modality.name!r} a number as flux_scale"
        )
    if len(noise) != modality.n_channels or not all(np.isfinite(v) and v > 0 for v in noise):
        raise DataError(
            f"{where}: the manifest's sky noise of {modality.field!r} is {noise}: not one positive number per "
            f"band of modality {modality.name!r} ({modality.n_channels} bands); give flux_scale as a number"
        )
    return [float(v) for v in noise]


def resolve_flux_scale(modality: ModalityConfig, band_stats: dict[str, dict[str, list[float]]],
                       where: str) -> ModalityConfig:
    """``modality`` with ``flux_scale: auto`` replaced by the measured per-band sky noise.

    Args:
        band_stats: ``Manifest.band_stats`` of the prepared folder the model trains on.
        where: the folder, named in errors.
    """
    if modality.flux_scale != "auto":
        return modality
    if modality.stretch != "none":
        raise ConfigError(
            f"modality {modality.name!r}: flux_scale 'auto' is the sky noise of the raw pixels, but the flux "
            f"features are made after the {modality.stretch!r} stretch; give flux_scale as a number"
        )
    noise = measured_noise(band_stats, modality, where)
    log.info("modality %s: flux_scale auto -> %s (sky noise per band of %s)", modality.name,
             [f"{v:.4g}" for v in noise], where)
    return dataclasses.replace(modality, flux_scale=noise)


def resolve_flux_scales(model: ModelConfig, band_stats: dict[str, dict[str, list[float]]], where: str) -> ModelConfig:
    """``model`` with every modality's ``flux_scale: auto`` resolved (:func:`resolve_flux_scale`)."""
    modalities = [resolve_flux_scale(m, band_stats, where) for m in model.modalities]
    return model if modalities == model.modalities else dataclasses.replace(model, modalities=modalities)
