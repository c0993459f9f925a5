"""Sky noise measured at preparation, and ``flux_scale: auto`` built from it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from astropt.config import ConfigError, ModalityConfig, ModelConfig, from_dict
from astropt.data.noise import resolve_flux_scales, sky_noise
from astropt.data.shards import ArraySpec, Manifest, finalize, write_shard
from astropt.errors import DataError, TokenizationError
from astropt.modalities import build_modality

SIGMAS = [0.0013, 0.0017, 0.0022, 0.0038]  # the built-in survey's g, r, i, z sky noise (nMgy)


def stamps(n: int = 64, size: int = 64, sigmas=SIGMAS, seed: int = 0) -> np.ndarray:
    """Galaxy stamps: a bright central source (S/N ~ 100-400 at its peak), a neighbour in half of them,
    a sky pedestal left over per stamp and band, and Gaussian noise of ``sigmas`` per band."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    out = np.empty((n, len(sigmas), size, size))
    for i in range(n):
        r = np.hypot(xx - size / 2, yy - size / 2)
        light = 0.5 * np.exp(-r / rng.uniform(1, 4))
        if i % 2:
            nx, ny = rng.uniform(0, size, 2)
            light = light + 0.05 * np.exp(-np.hypot(xx - nx, yy - ny) / 3)
        for c, s in enumerate(sigmas):
            out[i, c] = (1 + c) * light + rng.normal(0, 2, 1) * s + rng.normal(0, s, (size, size))
    return out.astype(np.float32)


def test_sky_noise_recovers_the_gaussian_sigma_under_sources():
    measured = np.array(sky_noise(stamps()))
    np.testing.assert_allclose(measured, SIGMAS, rtol=0.02)
    # Without the ring and the clipping the sources would dominate: the plain std is far off.
    plain = stamps().std(axis=(0, 2, 3))
    assert (plain > 3 * np.array(SIGMAS)).all()


def test_the_built_in_survey_manifest_holds_its_true_sky_noise(tmp_path):
    from astropt.data.synthetic import synthesize
    from astropt.data.synthetic.render import sky_noise as true_noise

    manifest = synthesize(tmp_path, 48, seed=0, image_size=64, bands="griz", spectra=False, workers=1, progress=False)
    np.testing.assert_allclose(manifest.band_stats["image"]["noise"], [true_noise(b, 0.2)[0] for b in "griz"],
                               rtol=0.02)


def write_survey(folder: Path, images: np.ndarray) -> Manifest:
    arrays = {"image": ArraySpec(list(images.shape[1:]))}
    records = [{"id": f"g{i}", "image": im, "labels": {"z": 0.1}} for i, im in enumerate(images)]
    entries = [write_shard(folder, k, records[k * 32 : (k + 1) * 32], arrays) for k in range(len(records) // 32)]
    return finalize(folder, entries, arrays, {"z": "float64"})


def image_model(flux_scale) -> ModelConfig:
    modality = ModalityConfig(image_size=64, n_channels=4, patch_size=8, flux_features=True, flux_scale=flux_scale)
    return ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=64, modalities=[modality])


def test_the_manifest_stores_the_noise_per_band(tmp_path):
    manifest = write_survey(tmp_path, stamps())
    assert Manifest.read(tmp_path).band_stats == manifest.band_stats
    np.testing.assert_allclose(manifest.band_stats["image"]["noise"], SIGMAS, rtol=0.03)


def test_a_survey_in_other_units_gets_the_same_tokens_with_auto(tmp_path):
    """The point of auto: the built-in survey x 1000 ("counts") measures a flux_scale x 1000,
    so its tokens (flux features included) are those of the original survey."""
    images = stamps()
    scaled = {k: write_survey(tmp_path / k, images * f) for k, f in (("nmgy", 1.0), ("counts", 1000.0))}
    configs = {k: resolve_flux_scales(image_model("auto"), m.band_stats, k) for k, m in scaled.items()}
    units = {k: np.array(c.modalities[0].flux_scale) for k, c in configs.items()}
    np.testing.assert_allclose(units["counts"], 1000 * units["nmgy"], rtol=1e-5)
    tokens = {k: build_modality(c.modalities[0]).tokenize(torch.from_numpy(images[:4] * (1000.0 if k == "counts" else 1.0))).values
              for k, c in configs.items()}
    torch.testing.assert_close(tokens["counts"], tokens["nmgy"], rtol=1e-4, atol=1e-4)
    # A fixed unit does not follow the survey: the flux features of the counts differ.
    fixed = build_modality(image_model(0.002).modalities[0])
    flux = slice(8 * 8 * 4, None)
    drift = (fixed.tokenize(torch.from_numpy(images[:4] * 1000)).values[..., flux]
             - fixed.tokenize(torch.from_numpy(images[:4])).values[..., flux]).abs().mean()
    assert drift > 1.0


def test_auto_needs_a_noise_estimate_and_raw_pixels(tmp_path):
    with pytest.raises(DataError, match="prepare the folder again"):
        resolve_flux_scales(image_model("auto"), {"image": {"mean": [0.0] * 4}}, "old-folder")
    stretched = image_model("auto")
    stretched.modalities[0].stretch = "asinh"
    with pytest.raises(ConfigError, match="stretch"):
        resolve_flux_scales(stretched, {"image": {"noise": SIGMAS}}, "folder")
    with pytest.raises(TokenizationError, match="auto"):
        build_modality(image_model("auto").modalities[0]).tokenize(torch.zeros(4, 64, 64))


@pytest.mark.parametrize("value", ["auto", 0.0, 0.002, 3, [0.1, 0.2, 0.3, 0.4], "1e-3"])
def test_flux_scale_accepts_auto_and_numbers(value):
    config = from_dict(ModalityConfig, {"n_channels": 4, "patch_size": 8, "flux_scale": value})
    assert config.flux_scale == (float(value) if value == "1e-3" else value)


@pytest.mark.parametrize("value", ["automatic", -1.0, [0.1, 0.2], [0.1, 0.0, 0.1, 0.1], True])
def test_flux_scale_refuses_anything_else_by_name(value):
    with pytest.raises(ConfigError, match="flux_scale"):
        from_dict(ModalityConfig, {"name": "images", "n_channels": 4, "patch_size": 8, "flux_scale": value})
