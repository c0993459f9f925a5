"""Raw data made the way a model expects it: the bridge from a source (a hub dataset, a
folder of FITS or JPEG files, a catalogue) to prepared shards, driven by the model's own
record of its tokenisation and preprocessing.

``astropt embed Smith42/astroPT_v2.0/astropt/095M Smith42/galaxies --out emb.parquet``
therefore needs no flags: the published model says which column holds its images
(``image_crop``), their layout (``(H, W, 3)`` JPEGs) and orientation (``transpose_hw``, in
its modality config), and the source is prepared into shards beside the output, resumably,
before it is embedded.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from astropt.data.prepare import prepare
from astropt.data.shards import MANIFEST, ShardSet
from astropt.data.sources.base import SourceConfig

log = logging.getLogger(__name__)


def source_config_for(model: Any, path: str | os.PathLike, limit: int = 0, split: str = "train") -> SourceConfig:
    """How to read the raw source at ``path`` for ``model``.

    The image column comes from the model's ``extra.preprocessing`` (published models) or
    is guessed by the source; images are cropped/padded around the centre to the model's
    image size, and their band count is checked against the model's.
    """
    extra = getattr(model, "pretrained_extra", {}) or {}
    pre = extra.get("preprocessing", {})
    images = [m for m in model.config.modalities if m.kind == "image"]
    image = images[0] if images else None
    columns = {pre["column"]: image.field} if pre.get("column") and image is not None else {}
    return SourceConfig(
        path=str(path),
        columns=columns,
        field=image.field if image is not None else "image",
        layout=pre.get("layout", "auto"),
        id_column=pre.get("id_column", "id"),
        image_size=image.image_size if image is not None else 0,
        n_bands=image.n_channels if image is not None else 0,
        split=split,
        limit=limit,
    )


def shards_for(model: Any, data: ShardSet | str | os.PathLike, out: str | os.PathLike, limit: int = 0,
               prepare_missing: bool = True) -> ShardSet:
    """``data`` as prepared shards: itself when it already is, else prepared for ``model``
    into ``OUT.data/`` (resumable; objects that cannot be read are listed in its
    ``rejects.csv``). ``prepare_missing=False`` only opens that folder (the other ranks
    of a distributed job, after rank 0 prepared it)."""
    if isinstance(data, ShardSet):
        return data
    if (Path(data) / MANIFEST).is_file():
        return ShardSet(data)
    folder = Path(out).with_name(Path(out).name + ".data")
    if not prepare_missing:
        return ShardSet(folder)
    cfg = source_config_for(model, data, limit=limit)
    log.info("preparing %s for the model into %s (column %s, %d px)", data, folder,
             next(iter(cfg.columns), cfg.field), cfg.image_size)
    prepare(cfg, folder, on_error="skip")
    return ShardSet(folder)
