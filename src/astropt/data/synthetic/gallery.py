"""A PNG grid of example galaxies of a prepared survey, with their labels.

Colour composites by the package's one :func:`astropt.viz.rgb_composite` (reddest band as
red, asinh stretch, each stamp scaled to its own brightness so faint galaxies stay
visible), with per-band weights that make a flat-spectrum source white; the title gives
redshift, r magnitude, bulge fraction, disk template and kind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from astropt.atomic import atomic_path
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.viz import rgb_composite

# Per-band weights that make a flat-spectrum (in f_nu) source look white, as in the
# Legacy Survey viewer.
RGB_WEIGHTS = {"u": 2.5, "g": 1.7, "r": 1.0, "i": 0.75, "z": 0.6, "y": 0.5}


def _pick(shards: ShardSet, n: int) -> np.ndarray:
    """Up to one object of each rare kind, the rest normal ones spread evenly in redshift."""
    labels = shards.labels(["kind", "redshift"])
    kinds = labels["kind"].astype(str)
    chosen: list[int] = []
    for kind in sorted(set(kinds) - {"normal"}):
        if len(chosen) < n // 4:
            chosen.append(int(np.nonzero(kinds == kind)[0][0]))
    normal = np.nonzero(kinds == "normal")[0][:5000]
    by_z = normal[np.argsort(labels["redshift"][normal])]
    if len(by_z):
        take = np.linspace(0, len(by_z) - 1, min(n - len(chosen), len(by_z))).round().astype(int)
        chosen = [int(i) for i in by_z[take]] + chosen
    return np.array(chosen[:n])


def preview(dataset_dir: str | os.PathLike, out_png: str | os.PathLike, n: int = 16) -> Path:
    """Write a PNG grid of ``n`` example galaxies of the survey in ``dataset_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    shards = ShardSet(dataset_dir)
    if "image" not in shards.arrays:
        raise DataError(f"{dataset_dir}: no image field to preview")
    bands = str(shards.manifest.source.get("bands", "griz"))
    idx = _pick(shards, n)
    batch = shards.get_batch(idx, fields=["image"])
    cols = int(np.ceil(np.sqrt(len(idx))))
    rows = int(np.ceil(len(idx) / cols))
    fig = Figure(figsize=(2.2 * cols, 2.5 * rows))
    for k in range(len(idx)):
        ax = fig.add_subplot(rows, cols, k + 1)
        weights = [RGB_WEIGHTS.get(b, 1.0) for b in bands] if len(bands) == batch["image"].shape[1] else None
        ax.imshow(rgb_composite(batch["image"][k], weights=weights), origin="lower")
        ax.set_xticks([])
        ax.set_yticks([])
        get = {name: batch[name][k] for name in ("redshift", "mag_r", "bulge_fraction", "disk_sed", "kind")
               if name in batch}
        title = f"z={get.get('redshift', np.nan):.2f} r={get.get('mag_r', np.nan):.1f}\n"
        title += f"B/T={get.get('bulge_fraction', np.nan):.2f} {get.get('disk_sed', '')}"
        if get.get("kind", "normal") != "normal":
            title += f" [{get['kind']}]"
        ax.set_title(title, fontsize=7)
    fig.suptitle(f"{Path(dataset_dir).name}: {bands} composite (asinh), sorted by redshift", fontsize=9)
    fig.tight_layout()
    out_png = Path(out_png)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return out_png
