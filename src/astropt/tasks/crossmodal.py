"""Cross-modal prediction: generate one modality of an object from another (KV cache).

For held-out objects the source modality (e.g. the image) is tokenised, the target
modality's begin token is appended and the whole target sequence (e.g. all spectrum
windows, at the truth's wavelength positions) is generated autoregressively.

Spectra are tokenised standardised per spectrum, so a predicted spectrum has a shape but
no flux scale. We de-standardise the prediction with the *truth's* mean and scale: the
metrics and the figure judge the predicted shape (continuum slope, features), not the
brightness. The headline number is the median relative error of the broad shape: both
spectra smoothed with a running mean of ``smooth`` samples (default: one window), then
``|pred - truth| / |truth|`` over all valid samples of all objects. As a yardstick the same
number is reported for a flat spectrum at the truth's mean (``median_rel_error_flat``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astropt.atomic import atomic_write_text
from astropt.config import ModalityConfig
from astropt.data.loader import Collator, batch_of, rows_to_records, split_indices, to_device
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.modalities import Tokens
from astropt.model import AstroPT
from astropt.tasks.common import load_model, open_data

log = logging.getLogger(__name__)


def resolve_modality(model: AstroPT, which: str | None, exclude: str | None = None) -> ModalityConfig:
    """A model modality by name, or by kind when exactly one modality has that kind."""
    mods = model.config.modalities
    if which is None:
        others = [m for m in mods if m.name != exclude]
        if len(others) != 1:
            raise ValueError(f"name the source modality; the model has {[m.name for m in mods]}")
        return others[0]
    for m in mods:
        if m.name == which:
            return m
    by_kind = [m for m in mods if m.kind == which]
    if len(by_kind) == 1:
        return by_kind[0]
    raise ValueError(f"model has no modality {which!r}; it has {[(m.name, m.kind) for m in mods]}")


def smooth(x: np.ndarray, valid: np.ndarray, width: int) -> np.ndarray:
    """Running mean over valid samples (NaN elsewhere), per row of ``(B, L)``."""
    kernel = np.ones(width)
    filled = np.where(valid, x, 0.0)
    conv = lambda a: np.apply_along_axis(np.convolve, 1, a, kernel, mode="same")  # noqa: E731
    counts = conv(valid.astype(np.float64))
    return np.where(valid & (counts > 0), conv(filled) / np.maximum(counts, 1), np.nan)


def spectrum_metrics(pred: torch.Tensor, truth: Tokens, width: int) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """Relative error of the broad shape; returns metrics, smoothed truth and prediction."""
    mean = truth.stats["mean"].double().numpy()
    scale = truth.stats["scale"].double().numpy()
    b = pred.shape[0]
    valid = truth.stats["valid"].reshape(b, -1).numpy()
    true_flux = truth.values.reshape(b, -1).double().numpy() * scale + mean
    pred_flux = pred.reshape(b, -1).double().numpy() * scale + mean
    s_true, s_pred = smooth(true_flux, valid, width), smooth(pred_flux, valid, width)
    flat = np.broadcast_to(mean, s_true.shape)
    ok = valid & np.isfinite(s_true) & (np.abs(s_true) > 0)
    rel = np.abs(s_pred - s_true)[ok] / np.abs(s_true[ok])
    rel_flat = np.abs(flat - s_true)[ok] / np.abs(s_true[ok])
    token_mask = truth.mask if truth.mask is not None else torch.ones(pred.shape[:2], dtype=torch.bool)
    err = ((pred.float() - truth.values) ** 2).mean(-1)[token_mask]
    metrics = {
        "median_rel_error": float(np.median(rel)),
        "median_rel_error_flat": float(np.median(rel_flat)),
        "token_mse": float(err.mean()),
        "token_mse_zero": float((truth.values**2).mean(-1)[token_mask].mean()),
    }
    return metrics, s_true, s_pred


@torch.no_grad()
def predict_modality(
    model: AstroPT | str | os.PathLike,
    data: ShardSet | str | os.PathLike,
    source: str | None,
    target: str,
    out: str | os.PathLike | None = None,
    n: int = 16,
    val_fraction: float = 0.1,
    device: str = "cpu",
) -> dict[str, Any]:
    """Predict modality ``target`` from ``source`` for ``n`` held-out objects.

    Args:
        model: a model, or a pretrained folder / hub id.
        data: a prepared shard folder (or an open ShardSet) holding both modalities.
        source, target: modality names or kinds (``image``, ``spectrum``).
        out: folder for ``crossmodal_<source>_to_<target>.png`` and ``.json``; None: none.
        n: number of held-out objects (the validation split by id hash).
        val_fraction: the validation fraction of the training split.

    Returns:
        metrics (see module docstring for spectra; token MSE vs predicting zeros otherwise),
        the object ids, and the paths written.
    """
    model = load_model(model, device).eval()
    data = open_data(data) if not isinstance(data, ShardSet) else data
    tgt = resolve_modality(model, target)
    src = resolve_modality(model, source, exclude=tgt.name)
    for m in (src, tgt):
        if m.field not in data.arrays:
            raise DataError(f"data {getattr(data, 'directory', data)} has no field {m.field!r} for modality {m.name!r}")
    idx = split_indices(data.ids, "val", val_fraction)
    if len(idx) == 0:
        idx = np.arange(len(data))
    idx = idx[:n]
    records = rows_to_records(data.get_batch(idx), data.label_names)
    tokens = Collator([src, tgt]).tokenize(records)
    truth = tokens[tgt.name]
    batch = to_device(batch_of({src.name: tokens[src.name]}), device)
    pred = model.generate(batch, tgt.name, truth.values.shape[1],
                          target_positions=truth.positions.to(device)).float().cpu()
    result: dict[str, Any] = {"source": src.name, "target": tgt.name, "n": len(records),
                              "ids": [r["id"] for r in records]}
    curves = None
    if tgt.kind == "spectrum":
        metrics, s_true, s_pred = spectrum_metrics(pred, truth, tgt.patch_size)
        curves = (truth.stats["wavelength"].numpy(), s_true, s_pred)
    else:
        mask = truth.mask if truth.mask is not None else torch.ones(pred.shape[:2], dtype=torch.bool)
        metrics = {"token_mse": float(((pred - truth.values) ** 2).mean(-1)[mask].mean()),
                   "token_mse_zero": float((truth.values**2).mean(-1)[mask].mean())}
    result.update(metrics)
    if out is not None:
        result.update(_write(Path(out), result, curves))
    log.info("cross-modal %s -> %s: %s", src.name, tgt.name, metrics)
    return result


def _write(out: Path, result: dict[str, Any], curves) -> dict[str, str]:
    import json

    stem = out / f"crossmodal_{result['source']}_to_{result['target']}"
    paths = {"json": str(stem.with_suffix(".json"))}
    atomic_write_text(paths["json"], json.dumps(result, indent=2))
    if curves is not None:
        paths["figure"] = str(spectra_figure(*curves, stem.with_suffix(".png"), result))
    return paths


def spectra_figure(wavelength, truth, pred, path: Path, result: dict[str, Any], n_show: int = 6) -> Path:
    """Truth vs predicted spectra (smoothed) for the first ``n_show`` objects."""
    from matplotlib.figure import Figure

    from astropt.viz import save_figure

    k = min(n_show, len(truth))
    fig = Figure(figsize=(10, 1.8 * k))
    axes = fig.subplots(k, 1, squeeze=False)[:, 0]
    for i, ax in enumerate(axes):
        ax.plot(wavelength[i], truth[i], color="0.3", lw=1.2, label="truth (smoothed)")
        ax.plot(wavelength[i], pred[i], color="C3", lw=1.2, label=f"predicted from {result['source']}")
        ax.set_ylabel(str(result["ids"][i]), fontsize=8)
    axes[0].legend(fontsize=8, loc="upper right")
    axes[-1].set_xlabel("wavelength [Å]")
    fig.suptitle(
        f"{result['source']} → {result['target']}: median relative error of the broad shape "
        f"{result['median_rel_error']:.3f} (flat spectrum: {result['median_rel_error_flat']:.3f}); "
        "flux scale taken from the truth",
        fontsize=9,
    )
    return save_figure(fig, path)
