"""The embedded default: a synthetic multi-band, multi-modal galaxy survey with known truth.

Rendered with GalSim from templates shipped in its wheel, so the whole pipeline runs
offline, and every object carries the physical parameters it was drawn from, so we can
measure whether a model has learned physics (probes, search, anomaly ranking).

Each object (``render_object``) is a record of the prepared-shard format:

- ``image`` float32 ``(bands, H, W)``: flux in nanomaggies per pixel (AB 22.5 = 1 nMgy),
  sky-subtracted, with sky + source shot noise; bulge (Sersic) + disk (exponential) +
  star-forming knots, each with its own redshifted SED, convolved with a Moffat PSF;
- ``spectrum`` float32 ``(640,)``: observed f_lambda in 1e-17 erg/s/cm^2/A of the whole
  galaxy (continuum + nebular emission lines), with noise; ``spectrum_wavelength``
  (Angstrom, 3600-9800, fixed grid) and ``spectrum_ivar``;
- ``photometry`` / ``photometry_err`` float32 ``(bands,)``: noisy AB magnitudes and errors;
- ``labels``: every drawn parameter and derived quantities (listed in the README,
  "The synthetic survey").

About ``rare_fraction`` of the objects are rare classes (``kind`` label): strong-lens arcs,
a bright star overlapping the galaxy, an edge-on dust-lane disk, a merger pair.

Everything is deterministic in (seed, object index): the same survey for any worker count.
The distributions are documented in :mod:`astropt.data.synthetic.params` and the README.
:func:`synthesize` writes a survey through the one shard writer, ``prepare``, fed by
:class:`~astropt.data.synthetic.source.SyntheticSource`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import brentq
from scipy.special import gammainc, gammaincinv

from astropt.config import ModelConfig
from astropt.data.shards import (
    MANIFEST,
    ArraySpec,
    Manifest,
)
from astropt.data.synthetic import templates as gt
from astropt.data.synthetic.params import SED_NAMES, Galaxy, draw_galaxy, draw_kind
from astropt.data.synthetic.rare import rare_components
from astropt.data.synthetic.render import (
    SPECTRUM_WAVE,
    add_image_noise,
    add_spectrum_noise,
    draw_image,
    galaxy_components,
    photometry,
    psf_profile,
)
from astropt.errors import ConfigError, DataError
from astropt.locks import writes_to

log = logging.getLogger(__name__)

GENERATOR_VERSION = 2  # bump when the rendering changes: invalidates cached surveys


@dataclass
class SurveyConfig:
    """Settings that fully determine a synthetic survey (validated on construction)."""

    n: int = 1000
    """Number of objects."""
    seed: int = 0
    """Seed of the survey; object ``i`` depends only on (seed, i)."""
    image_size: int = 64
    """Stamp side in pixels."""
    bands: str = "griz"
    """Imaging bands, a subset of the LSST ``ugrizy`` in channel order."""
    pixel_scale: float = 0.2
    """Arcsec per pixel."""
    rare_fraction: float = 0.01
    """Fraction of objects drawn as one of the rare kinds."""
    spectra: bool = True
    """Also store a spectrum per object."""
    spectrum_exposure: float = 1.0
    """Spectroscopic exposure relative to the default: sky noise variance scales as
    ``1 / exposure`` and so does the source shot noise (4: twice the S/N). The default gives
    a median S/N of about 2 per 9.7 Å pixel; 16 is closer to a bright-galaxy redshift survey."""
    rows_per_shard: int = 512
    """Objects per shard file."""

    def __post_init__(self) -> None:
        if isinstance(self.bands, (list, tuple)):
            self.bands = "".join(self.bands)
        unknown = [b for b in self.bands if b not in gt.ALL_BANDS]
        if not self.bands or unknown or len(set(self.bands)) != len(self.bands):
            raise ConfigError(
                f"bands {self.bands!r}: give distinct LSST bands from {gt.ALL_BANDS!r}, e.g. 'griz'")
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n <= 0:
            raise ConfigError(f"n must be a positive number of objects, got {self.n!r}")
        if not 8 <= self.image_size <= 1024:
            raise ConfigError(f"image_size must be between 8 and 1024 pixels, got {self.image_size}")
        if not 0.0 < self.pixel_scale <= 5.0:
            raise ConfigError(f"pixel_scale must be in (0, 5] arcsec, got {self.pixel_scale}")
        if not 0.0 <= self.rare_fraction <= 1.0:
            raise ConfigError(f"rare_fraction must be in [0, 1], got {self.rare_fraction}")
        if self.rows_per_shard <= 0:
            raise ConfigError(f"rows_per_shard must be positive, got {self.rows_per_shard}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if not 0.0 < self.spectrum_exposure <= 1e6:
            raise ConfigError(f"spectrum_exposure must be in (0, 1e6], got {self.spectrum_exposure}")

    @property
    def band_indices(self) -> list[int]:
        return [gt.ALL_BANDS.index(b) for b in self.bands]

    @property
    def n_shards(self) -> int:
        return math.ceil(self.n / self.rows_per_shard)

    def hash(self) -> str:
        settings = dataclasses.asdict(self)
        if settings["spectrum_exposure"] == 1.0:  # surveys made before the option keep their hash
            del settings["spectrum_exposure"]
        blob = json.dumps({"version": GENERATOR_VERSION, **settings}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def check_model_compat(cfg: SurveyConfig, model: ModelConfig) -> None:
    """Raise ``ConfigError`` if a survey's images cannot feed ``model``'s image modality."""
    for modality in model.modalities:
        if modality.kind != "image":
            continue
        if cfg.image_size % modality.patch_size:
            raise ConfigError(
                f"image size {cfg.image_size} is not a multiple of the patch size "
                f"{modality.patch_size} of modality {modality.name!r}")
        if len(cfg.bands) != modality.n_channels:
            raise ConfigError(
                f"{len(cfg.bands)} bands {cfg.bands!r} but modality {modality.name!r} "
                f"has n_channels={modality.n_channels}")


# ----------------------------------------------------------------------------- one object


def half_light_radius(g: Galaxy) -> float:
    """Half-light radius (arcsec) of bulge + disk in r, from their Sersic growth curves."""
    def enclosed(r: float) -> float:
        bulge = gammainc(2 * g.sersic_n, gammaincinv(2 * g.sersic_n, 0.5) * (r / g.bulge_hlr) ** (1 / g.sersic_n))
        disk = gammainc(2.0, gammaincinv(2.0, 0.5) * r / g.disk_hlr)
        return g.bulge_fraction * bulge + (1.0 - g.bulge_fraction) * disk - 0.5

    lo, hi = min(g.bulge_hlr, g.disk_hlr), max(g.bulge_hlr, g.disk_hlr)
    return lo if hi - lo < 1e-6 else float(brentq(enclosed, lo, hi, xtol=1e-5))


def _labels(cfg: SurveyConfig, g: Galaxy, kind: str, true_mag: np.ndarray, obs_mag: np.ndarray,
            snr: np.ndarray, hlr: float) -> dict[str, Any]:
    labels: dict[str, Any] = {"kind": kind, "is_rare": int(kind != "normal")}
    for name in ("redshift", "bulge_fraction", "sersic_n", "halpha_ew", "knot_fraction",
                 "abs_mag_r", "rest_g_r", "log_stellar_mass", "ellipticity"):
        labels[name] = float(getattr(g, name))
    for b in dict.fromkeys(cfg.bands + "r"):
        k = gt.ALL_BANDS.index(b)
        labels[f"mag_{b}"] = float(true_mag[k])
        labels[f"mag_{b}_obs"] = float(obs_mag[k])
    for a, b in zip(cfg.bands[:-1], cfg.bands[1:], strict=True):
        labels[f"{a}_{b}"] = labels[f"mag_{a}"] - labels[f"mag_{b}"]
    labels.update(
        mag_r=float(true_mag[gt.ALL_BANDS.index("r")]),
        snr_r=float(snr[gt.ALL_BANDS.index("r")]),
        bulge_hlr_arcsec=g.bulge_hlr, disk_hlr_arcsec=g.disk_hlr, hlr_arcsec=hlr,
        axis_ratio=g.disk_q, position_angle=float(np.degrees(g.position_angle)),
        bulge_sed=SED_NAMES[g.bulge_sed], disk_sed=SED_NAMES[g.disk_sed],
        bulge_sed_index=g.bulge_sed, disk_sed_index=g.disk_sed,
        n_knots=g.n_knots, has_knots=int(g.n_knots > 0), psf_fwhm_arcsec=g.psf_fwhm,
    )
    return labels


def render_object(index: int, seed: int, cfg: SurveyConfig) -> dict[str, Any]:
    """Render object ``index`` of the survey with ``seed``: one Observation record."""
    tables = gt.tables()
    streams = np.random.SeedSequence([seed, index]).spawn(4)
    rng_kind, rng, rng_noise = (np.random.default_rng(s) for s in streams[:3])
    knot_seed = int(streams[3].generate_state(1)[0] % (2**31 - 2)) + 1
    stamp_arcsec = cfg.image_size * cfg.pixel_scale
    kind = draw_kind(rng_kind, cfg.rare_fraction)
    g = draw_galaxy(rng, tables, max_hlr=0.25 * stamp_arcsec, kind=kind)
    components = galaxy_components(g, tables, knot_seed)
    components += rare_components(kind, g, components, tables, rng, cfg.pixel_scale,
                                  cfg.image_size, knot_seed)

    image = draw_image(components, psf_profile(g), cfg.band_indices, cfg.image_size, cfg.pixel_scale)
    image = add_image_noise(image, cfg.bands, cfg.pixel_scale, rng_noise)
    true_flux = sum(c.band_flux for c in components if c.in_galaxy)
    true_mag = 22.5 - 2.5 * np.log10(np.maximum(true_flux, 1e-30))
    hlr = half_light_radius(g)
    obs_mag, mag_err, snr = photometry(true_flux, hlr, g.psf_fwhm, cfg.pixel_scale, rng_noise)
    bands = cfg.band_indices
    record: dict[str, Any] = {
        "id": f"synth-{seed}-{index:07d}",
        "image": image,
        "photometry": obs_mag[bands].astype(np.float32),
        "photometry_err": mag_err[bands].astype(np.float32),
    }
    if cfg.spectra:
        spectrum = sum(c.spectrum for c in components if c.spectrum is not None)
        record["spectrum"], record["spectrum_ivar"] = add_spectrum_noise(spectrum, rng_noise,
                                                                         cfg.spectrum_exposure)
        record["spectrum_wavelength"] = SPECTRUM_WAVE.astype(np.float32)
    record["labels"] = _labels(cfg, g, kind, true_mag, obs_mag, snr, hlr)
    return record


# ----------------------------------------------------------------------------- the survey


def array_specs(cfg: SurveyConfig) -> dict[str, ArraySpec]:
    """Shapes of the array fields of a survey's records."""
    specs = {
        "image": ArraySpec([len(cfg.bands), cfg.image_size, cfg.image_size]),
        "photometry": ArraySpec([len(cfg.bands)]),
        "photometry_err": ArraySpec([len(cfg.bands)]),
    }
    if cfg.spectra:
        for name in ("spectrum", "spectrum_wavelength", "spectrum_ivar"):
            specs[name] = ArraySpec([len(SPECTRUM_WAVE)])
    return specs


@writes_to("out")
def synthesize(
    out: str | os.PathLike,
    n: int,
    seed: int = 0,
    image_size: int = 64,
    bands: str = "griz",
    workers: int = 1,
    rows_per_shard: int = 512,
    rare_fraction: float = 0.01,
    pixel_scale: float = 0.2,
    spectra: bool = True,
    progress: bool = True,
    spectrum_exposure: float = 1.0,
) -> Manifest:
    """Render a synthetic survey of ``n`` objects into the prepared-shard folder ``out``.

    Deterministic in ``seed`` for any ``workers``. Resumable (by ``prepare``): finished
    shards of an interrupted run with the same settings are kept. If ``out`` already holds the complete
    survey with these settings it is returned at once (a cache). ``bands`` may also be a
    list of band names (None: ``griz``). Raises ``ConfigError`` for invalid settings and
    ``DataError`` if ``out`` holds something else, before writing anything.
    """
    bands = "griz" if bands is None else bands
    cfg = SurveyConfig(n=n, seed=seed, image_size=image_size, bands=bands, pixel_scale=pixel_scale,
                       rare_fraction=rare_fraction, spectra=spectra, rows_per_shard=rows_per_shard,
                       spectrum_exposure=spectrum_exposure)
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    out, digest = Path(out), cfg.hash()
    if (out / MANIFEST).is_file():
        manifest = Manifest.read(out)
        if manifest.config_hash == digest:
            log.info("%s already holds this synthetic survey (%d objects)", out, manifest.n_objects)
            return manifest
        raise DataError(f"{out}: holds a dataset made with other settings; choose another folder or delete it")
    if out.exists() and not out.is_dir():
        raise DataError(f"{out}: exists and is not a folder; choose a new or empty one")
    from astropt.data.prepare import prepare
    from astropt.data.synthetic.source import SyntheticSource

    return prepare(SyntheticSource(cfg), out, rows_per_shard=cfg.rows_per_shard, workers=workers,
                   progress=progress, arrays=array_specs(cfg), config_hash=digest)


def preview(dataset_dir: str | os.PathLike, out_png: str | os.PathLike, n: int = 16) -> Path:
    """Write a PNG grid of ``n`` example galaxies (asinh RGB composites with labels)."""
    from astropt.data.synthetic.gallery import preview as _preview

    return _preview(dataset_dir, out_png, n)
