"""Training figures: image reconstructions during training, and loss curves of a run."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from astropt.config import ModelConfig  # noqa: E402
from astropt.data.loader import Collator, batch_of, to_device  # noqa: E402
from astropt.modalities.base import build_modality  # noqa: E402
from astropt.model.astropt import AstroPT  # noqa: E402
from astropt.viz import rgb_composite, save_figure  # noqa: E402  (rgb_composite: re-exported)

log = logging.getLogger(__name__)


@torch.no_grad()
def reconstructions(
    model: AstroPT, records: list[dict[str, Any]], objective: str, hide_ratio: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray] | None:
    """Inputs and model predictions ``(B, C, H, W)`` of the first image modality.

    AR: token ``t`` is predicted from tokens ``< t`` (the first is copied). MAE: a random
    ``hide_ratio`` of tokens is hidden and predicted; the others are copied. Predictions are
    put back on the image scale with each true patch's mean and standard deviation.
    """
    cfg: ModelConfig = model.config
    image_cfg = next((m for m in cfg.modalities if m.kind == "image"), None)
    if image_cfg is None:
        return None
    modality = build_modality(image_cfg)
    tokens = Collator([image_cfg]).tokenize(records)[image_cfg.name]
    device = next(model.parameters()).device
    batch = to_device(batch_of({image_cfg.name: tokens}), device)
    values = batch[image_cfg.name]
    if objective == "mae":
        g = torch.Generator().manual_seed(seed)
        hide = (torch.rand(values.shape[:2], generator=g) < hide_ratio).to(device)
        h, seq = model(batch, hide={image_cfg.name: hide})
        s = next(s for s in seq.segments if s.name == image_cfg.name)
        pred = model.decode(image_cfg.name, h[:, s.start : s.start + s.length])
        pred = torch.where(hide.unsqueeze(-1), pred, values)
    else:
        out = model.predict_all(batch)[image_cfg.name]
        pred = torch.cat([values[:, :1], out[:, :-1]], dim=1)
    stats = {k: v for k, v in tokens.stats.items()}
    truth = modality.detokenize(tokens.values, stats)
    guess = modality.detokenize(pred.float().cpu(), stats)
    return truth.numpy(), guess.numpy()


def reconstruction_figure(
    model: AstroPT, records: list[dict[str, Any]], objective: str, path: str | Path, hide_ratio: float = 0.5
) -> Path | None:
    """PNG of input, prediction, residual (one band) and RGB composites, one row per object."""
    pair = reconstructions(model, records, objective, hide_ratio)
    if pair is None:
        return None
    truth, guess = pair
    n = len(truth)
    fig, axes = plt.subplots(n, 5, figsize=(12, 2.4 * n), squeeze=False)
    band = truth.shape[1] // 2
    titles = [f"input (band {band})", f"{objective} prediction", "residual", "input RGB", "prediction RGB"]
    for i in range(n):
        lo, hi = np.percentile(truth[i, band], [1, 99.5])
        resid = truth[i, band] - guess[i, band]
        r = np.abs(resid).max() or 1.0
        panels = [
            (truth[i, band], dict(cmap="gray", vmin=lo, vmax=hi)),
            (guess[i, band], dict(cmap="gray", vmin=lo, vmax=hi)),
            (resid, dict(cmap="RdBu_r", vmin=-r, vmax=r)),
            (rgb_composite(truth[i]), {}),
            (rgb_composite(guess[i]), {}),
        ]
        for j, (img, kw) in enumerate(panels):
            axes[i, j].imshow(img, origin="lower", **kw)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(titles[j], fontsize=9)
            if j == 0:
                axes[i, j].text(2, 2, str(records[i]["id"]), color="yellow", fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, dpi=90, tight=False)
    plt.close(fig)
    return Path(path)


def plot_losses(rows: list[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Training (and validation) loss and learning rate against step, as a PNG."""
    train = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]
    if not train and not val:
        raise ValueError(f"{title or 'run'}: no losses logged yet")
    fig, (ax, ax_lr) = plt.subplots(2, 1, figsize=(7, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, label="validation")
    ax.set_yscale("log")
    ax.set_ylabel("loss (Huber)")
    ax.legend()
    ax.set_title(title)
    lrs = [(r["step"], r["lr"]) for r in rows if "lr" in r]
    if lrs:
        ax_lr.plot(*zip(*lrs, strict=True), color="gray")
    ax_lr.set_ylabel("lr")
    ax_lr.set_xlabel("step")
    fig.tight_layout()
    save_figure(fig, path, dpi=100, tight=False)
    plt.close(fig)
    return Path(path)
