"""Figures: galaxy grids (asinh RGB composites), probe scatter, R² by layer, maps, completions.

Uses matplotlib's object-oriented API (``Figure`` without pyplot), so it never touches a
user's backend or global state; every figure is written atomically as PNG.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from astropt.atomic import atomic_path


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110, tight: bool = True) -> Path:
    """Write ``fig`` as PNG through a temporary file + rename (``tight``: crop to the content)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight" if tight else None)
    return path


def rgb_composite(
    image: np.ndarray, softening: float = 0.05, weights: Sequence[float] | None = None
) -> np.ndarray:
    """``(C, H, W)`` bands in wavelength order -> ``(H, W, 3)`` asinh-stretched RGB in [0, 1].

    The one colour composite of the package (training figures, data grids, survey
    previews, task figures). Reddest band to red, bluest to blue (the middle one,
    ``C // 2``, to green); two bands give their mean as green, one band grey. The stretch
    (Lupton-style ``asinh(x / (softening * scale))``) shares one scale across bands so
    colours survive. ``weights``: optional per-band factors applied first (e.g. to make a
    flat-spectrum source white).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 2:
        img = img[None]
    if weights is not None:
        img = img * np.asarray(weights, dtype=np.float64)[:, None, None]
    c = img.shape[0]
    if c >= 3:
        chans = [img[c - 1], img[c // 2], img[0]]
    elif c == 2:
        chans = [img[1], img.mean(0), img[0]]
    else:
        chans = [img[0]] * 3
    rgb = np.stack(chans, axis=-1)
    rgb = rgb - np.median(rgb, axis=(0, 1), keepdims=True)
    scale = np.percentile(np.abs(rgb), 99.5) or 1.0
    rgb = np.arcsinh(rgb / (softening * scale)) / np.arcsinh(1.0 / softening)
    return np.clip(rgb, 0.0, 1.0)


def galaxy_grid(
    images: Sequence[np.ndarray],
    path: str | os.PathLike,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    title: str | None = None,
    highlight: Sequence[bool] | None = None,
) -> Path:
    """A grid of RGB thumbnails with optional per-panel titles (and red frames on ``highlight``)."""
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = max(1, (n + ncols - 1) // ncols)
    fig = Figure(figsize=(1.6 * ncols, 1.7 * nrows + (0.4 if title else 0)))
    for i in range(nrows * ncols):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= n:
            ax.axis("off")
            continue
        ax.imshow(rgb_composite(images[i]), origin="lower")
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=7)
        if highlight is not None and highlight[i]:
            for spine in ax.spines.values():
                spine.set_edgecolor("red")
                spine.set_linewidth(2.5)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def probe_scatter(
    panels: dict[str, tuple[np.ndarray, np.ndarray]],
    path: str | os.PathLike,
    metrics: dict[str, dict[str, float]] | None = None,
) -> Path:
    """Predicted vs true, one panel per target, with the 1:1 line and R² in the corner."""
    names = list(panels)
    ncols = min(3, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    fig = Figure(figsize=(3.4 * ncols, 3.2 * nrows))
    for k, name in enumerate(names):
        y, pred = (np.asarray(a, dtype=np.float64) for a in panels[name])
        ax = fig.add_subplot(nrows, ncols, k + 1)
        ax.scatter(y, pred, s=4, alpha=0.5, lw=0)
        lo, hi = np.nanmin(y), np.nanmax(y)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        ax.set_xlabel(f"true {name}")
        ax.set_ylabel(f"predicted {name}")
        if metrics and name in metrics:
            text = "\n".join(f"{k}={v:.3f}" for k, v in metrics[name].items() if isinstance(v, float))
            ax.text(0.03, 0.97, text, transform=ax.transAxes, va="top", fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def r2_by_layer(curves: dict[str, Sequence[float]], path: str | os.PathLike, metric: str = "R²") -> Path:
    """Probe score of each target against the block index the embedding was taken from."""
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    for name, values in curves.items():
        ax.plot(range(len(values)), values, marker="o", label=name)
    ax.set_xlabel("block (layer)")
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def embedding_map(
    coords: np.ndarray,
    colour: np.ndarray | None,
    path: str | os.PathLike,
    label: str = "",
    thumbnails: Sequence[np.ndarray] | None = None,
    thumb_rows: Sequence[int] | None = None,
    title: str = "",
) -> Path:
    """2-D map of embeddings coloured by a label, with thumbnails placed at some objects."""
    from matplotlib.offsetbox import AnnotationBbox, OffsetImage

    fig = Figure(figsize=(7, 6))
    ax = fig.add_subplot()
    if colour is None:
        ax.scatter(coords[:, 0], coords[:, 1], s=5, alpha=0.6, lw=0)
    elif np.asarray(colour).dtype.kind in "fiub":
        sc = ax.scatter(coords[:, 0], coords[:, 1], c=colour, s=5, alpha=0.7, lw=0, cmap="viridis")
        fig.colorbar(sc, ax=ax, label=label)
    else:
        for value in sorted(set(np.asarray(colour).tolist())):
            sel = np.asarray(colour) == value
            ax.scatter(coords[sel, 0], coords[sel, 1], s=6, alpha=0.7, lw=0, label=str(value))
        ax.legend(fontsize=7, title=label, markerscale=3)
    if thumbnails is not None and thumb_rows is not None:
        for image, row in zip(thumbnails, thumb_rows, strict=True):
            box = OffsetImage(rgb_composite(image), zoom=0.9 * 32 / max(image.shape[-1], 1))
            ax.add_artist(AnnotationBbox(box, coords[row], frameon=True, pad=0.1))
    ax.set_title(title or f"embedding map coloured by {label}")
    ax.set_xticks([])
    ax.set_yticks([])
    return save_figure(fig, path)


def completion_figure(
    original: np.ndarray,
    kept: np.ndarray,
    completed: np.ndarray,
    path: str | os.PathLike,
    caption: str = "",
) -> Path:
    """Original / kept (the rest masked) / completed images, side by side (first band rows)."""
    fig = Figure(figsize=(9, 3.4))
    panels = [("original", original), ("kept", kept), ("completed", completed)]
    finite = np.concatenate([np.asarray(a)[np.isfinite(a)].ravel() for _, a in panels])
    lo, hi = np.percentile(finite, [1, 99.5]) if finite.size else (0, 1)
    for k, (name, image) in enumerate(panels):
        ax = fig.add_subplot(1, 3, k + 1)
        ax.imshow(np.asarray(image).mean(0), origin="lower", cmap="magma", vmin=lo, vmax=hi)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
    if caption:
        fig.text(0.5, 0.01, caption, ha="center", fontsize=7, wrap=True)
    return save_figure(fig, path)


def pit_histograms(histograms: dict[str, Sequence[int]], path: str | os.PathLike,
                   metrics: dict[str, dict[str, float]] | None = None) -> Path:
    """PIT histogram per target (flat when the uncertainties are calibrated; a U shape
    means too narrow, a hump too wide), with the uniform level and the 68/95% coverage."""
    names = list(histograms)
    ncols = min(3, len(names))
    nrows = (len(names) + ncols - 1) // ncols
    fig = Figure(figsize=(3.4 * ncols, 2.8 * nrows))
    for k, name in enumerate(names):
        counts = np.asarray(histograms[name], dtype=np.float64)
        ax = fig.add_subplot(nrows, ncols, k + 1)
        edges = np.linspace(0, 1, len(counts) + 1)
        ax.stairs(counts / counts.sum() * len(counts), edges, fill=True, alpha=0.6)
        ax.axhline(1.0, color="k", ls="--", lw=0.8)
        ax.set_xlabel(f"PIT of {name}")
        ax.set_ylabel("density")
        m = (metrics or {}).get(name, {})
        if "coverage_68" in m:
            ax.set_title(f"68%: {m['coverage_68']:.2f}  95%: {m['coverage_95']:.2f}", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
