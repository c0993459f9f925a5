"""Observation records that fit any model config (random but finite), for smoke tests.

One record per object with an array for every modality of the config: images of the
configured bands and size, spectra of a few windows inside the wavelength range, light
curves, scalars as labels; plus a numeric ``redshift`` label for heads and probes.
"""

from __future__ import annotations

import numpy as np

from astropt.config import ModalityConfig, ModelConfig
from astropt.data.noise import resolve_flux_scales, sky_noise


def _fields(m: ModalityConfig, rng: np.random.Generator) -> dict:
    if m.kind == "image":
        return {m.field: rng.lognormal(0, 0.5, (m.n_channels, m.image_size, m.image_size)).astype(np.float32)}
    if m.kind == "spectrum":
        n = m.patch_size * min(3, max(1, m.max_tokens))
        lo, hi = m.wavelength_range
        return {m.field: 1 + rng.random(n).astype(np.float32),
                f"{m.field}_wavelength": np.linspace(lo + 1, hi - 1, n).astype(np.float32)}
    if m.kind == "timeseries":
        n = 12
        return {f"{m.field}_time": np.sort(rng.random(n) * 100).astype(np.float32),
                f"{m.field}_band": rng.integers(0, len(m.bands), n),
                f"{m.field}_flux": rng.normal(1, 0.1, n).astype(np.float32),
                f"{m.field}_err": np.full(n, 0.1, np.float32)}
    return {}


def records_for(config: ModelConfig, n: int, seed: int = 0) -> list[dict]:
    """``n`` records holding every modality of ``config``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        rec: dict = {"id": f"obj{i:03d}"}
        labels = {"redshift": float(rng.uniform(0.05, 1.0))}
        for m in config.modalities:
            rec.update(_fields(m, rng))
            labels.update({name: float(rng.normal()) for name in m.scalar_names})
        rec["labels"] = labels
        out.append(rec)
    return out


def with_measured_units(config: ModelConfig, records: list[dict]) -> ModelConfig:
    """``config`` with ``flux_scale: auto`` resolved from the sky noise of ``records``, as training
    resolves it from a prepared folder's manifest."""
    stats = {m.field: {"noise": sky_noise(np.stack([r[m.field] for r in records]))}
             for m in config.modalities if m.kind == "image"}
    return resolve_flux_scales(config, stats, "fake records")
