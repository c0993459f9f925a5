"""Figures of prepared data: a PNG grid of objects chosen by id (``astropt data show``).

Colour images are composites of three bands with an asinh stretch, the reddest band
(last in band order, assuming bands are listed blue to red) shown as red; one- and
two-band images are shown in grey (first band).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.viz import rgb_composite, save_figure


def show(
    directory: str | os.PathLike,
    ids: list[str],
    out: str | os.PathLike = "grid.png",
    field: str = "image",
    columns: int = 0,
    label: str = "",
) -> Path:
    """Write a PNG grid of the objects ``ids`` of a prepared folder; returns its path.

    Args:
        directory: prepared shard folder.
        ids: object ids, shown in this order.
        out: PNG file to write (atomically).
        field: image field of the records.
        columns: grid columns (0: about square).
        label: a label whose value is printed under each id.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shards = ShardSet(directory)
    if field not in shards.arrays or len(shards.arrays[field].shape) != 3:
        raise DataError(f"{directory}: no image field {field!r}; arrays are {list(shards.arrays)}")
    if not ids:
        raise ValueError("show: give at least one id")
    position = {obj_id: i for i, obj_id in enumerate(shards.ids)}
    missing = [i for i in ids if i not in position]
    if missing:
        raise DataError(f"{directory}: no object(s) {missing[:5]} ({len(shards)} objects)")
    if label and label not in shards.label_names:
        raise DataError(f"{directory}: no label {label!r}; labels are {shards.label_names}")
    batch = shards.get_batch([position[i] for i in ids], fields=[field])
    columns = columns or math.ceil(math.sqrt(len(ids)))
    rows = math.ceil(len(ids) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for k, obj_id in enumerate(ids):
        ax = axes.ravel()[k]
        ax.imshow(rgb_composite(batch[field][k]), origin="lower", interpolation="nearest")
        title = f"{obj_id}\n{label}={_format(batch[label][k])}" if label else obj_id
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    save_figure(fig, out, dpi=100, tight=False)
    plt.close(fig)
    return Path(out)


def _format(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, (float, np.floating)) else str(value)
