"""What the explorer page needs from a survey, from its embeddings and prepared shards.

A :class:`Catalog` holds the embeddings, their cached 2-D layout and anomaly scores, the
FAISS index that ``astropt search`` uses (so a clicked object's neighbours are exactly those
``astropt search`` returns) and, when the data folder is available, the images behind the
thumbnails. Arrays travel to the page as base64 little-endian columns.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from astropt.data.shards import DataError
from astropt.tasks.common import image_field, open_data
from astropt.tasks.embed import load_embeddings
from astropt.tasks.explore.config import ExploreConfig
from astropt.tasks.explore.layout import cached_layout
from astropt.tasks.explore.thumbs import thumbnail_png
from astropt.tasks.search import cached_index, nearest, standardizer

log = logging.getLogger(__name__)

MAX_CATEGORIES = 64
ANOMALY_LABEL = "anomaly score"
THUMB_CACHE = 4096


class UnknownObjectError(DataError):
    """An id that is not in the explored embeddings (the server answers 404)."""


def encode_column(values: np.ndarray, dtype: str = "float32") -> dict[str, str]:
    """An array as ``{"dtype", "b64"}``: base64 of its little-endian bytes."""
    little = {"float32": "<f4", "uint16": "<u2", "int32": "<i4"}[dtype]
    blob = np.ascontiguousarray(values, dtype=little).tobytes()
    return {"dtype": dtype, "b64": base64.b64encode(blob).decode("ascii")}


def label_entry(name: str, values: np.ndarray) -> dict[str, Any] | None:
    """One label for the page: numeric (values, finite range) or categorical (codes, names)."""
    values = np.asarray(values)
    if values.dtype.kind in "fiub":
        x = values.astype(np.float64)
        finite = x[np.isfinite(x)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
        return {"name": name, "kind": "numeric", "min": lo, "max": hi, "values": encode_column(x)}
    categories, codes = np.unique(values.astype(str), return_inverse=True)
    if len(categories) > MAX_CATEGORIES:
        log.info("label %r has %d distinct values: not offered for colouring", name, len(categories))
        return None
    return {"name": name, "kind": "categorical", "categories": categories.tolist(),
            "values": encode_column(codes, "uint16")}


class Catalog:
    """Embeddings + layout + search index + thumbnails of one survey, for the explorer."""

    def __init__(self, embeddings: str | os.PathLike, data: str | os.PathLike | None = None,
                 config: ExploreConfig | None = None):
        self.path = Path(embeddings)
        self.config = config or ExploreConfig()
        self.emb = load_embeddings(self.path)
        self.column = self.config.column or self.emb.default_column
        vectors = self.emb.matrix(self.column)
        self.layout = cached_layout(self.path, self.emb, self.column, self.config)
        self.stats = standardizer(vectors)  # as `astropt search` (standardize=True)
        self.index = cached_index(self.path, self.emb, self.column, self.config.metric, self.stats)
        self.row_of = {object_id: row for row, object_id in enumerate(self.emb.ids)}
        self.anomaly_order = np.argsort(-self.layout.anomaly, kind="stable")
        self._open_data(data or self.emb.meta.get("data"))
        self._thumbs: dict[str, bytes] = {}
        self._lock = threading.Lock()

    def _open_data(self, data: str | os.PathLike | None) -> None:
        self.data, self.image_field, self._data_row = None, None, {}
        if not data or not Path(data).exists():
            log.warning("no data folder for thumbnails (%s); pass --data to see the objects' images",
                        data or "none recorded in the embeddings")
            return
        self.data = open_data(data)
        self.image_field = image_field(self.data)
        self._data_row = {object_id: k for k, object_id in enumerate(self.data.ids)}

    def __len__(self) -> int:
        return len(self.emb.ids)

    def row(self, object_id: str) -> int:
        """Row of ``object_id`` in the embeddings; :class:`UnknownObjectError` when absent."""
        row = self.row_of.get(str(object_id))
        if row is None:
            raise UnknownObjectError(f"no object {object_id!r} in {self.path.name} ({len(self)} objects)")
        return row

    def neighbours(self, object_id: str, k: int | None = None) -> list[dict[str, Any]]:
        """The ``k`` nearest objects, exactly as ``astropt search EMBEDDINGS --query ID -k K``."""
        return self.neighbours_of_rows([self.row(object_id)], k)[0]

    def neighbours_of_rows(self, rows: np.ndarray | list[int], k: int | None = None) -> list[list[dict[str, Any]]]:
        vectors = self.emb.matrix(self.column)[np.asarray(rows, dtype=np.int64)]
        return nearest(self.index, self.emb.ids, vectors, k or self.config.k, self.config.metric, self.stats)

    def thumbnail(self, object_id: str) -> bytes:
        """PNG of the object's RGB composite (cached in memory)."""
        self.row(object_id)
        with self._lock:
            if object_id in self._thumbs:
                return self._thumbs[object_id]
        if self.data is None or self.image_field is None:
            raise UnknownObjectError(f"no images to show for {object_id!r}: start the explorer with --data")
        if object_id not in self._data_row:
            raise UnknownObjectError(f"object {object_id!r} is not in the data folder {self.data.directory}")
        image = self.data.get_batch([self._data_row[object_id]], fields=[self.image_field])[self.image_field][0]
        png = thumbnail_png(image)
        with self._lock:
            if len(self._thumbs) >= THUMB_CACHE:
                self._thumbs.pop(next(iter(self._thumbs)))
            self._thumbs[object_id] = png
        return png

    def top_anomalies(self, top: int | None = None) -> list[dict[str, Any]]:
        """The most anomalous objects, as ``astropt anomalies`` ranks them (kNN distance)."""
        rows = self.anomaly_order[: top or self.config.top]
        return [{"rank": r, "id": self.emb.ids[i], "score": float(self.layout.anomaly[i])} for r, i in enumerate(rows)]

    def payload(self, rows: np.ndarray | None = None, limit: int | None = None) -> dict[str, Any]:
        """The page's data for ``rows`` (default: every object), JSON-ready."""
        rows = np.arange(len(self)) if rows is None else np.asarray(rows, dtype=np.int64)
        labels = [label_entry(name, values[rows]) for name, values in self.emb.labels.items()]
        labels.append(label_entry(ANOMALY_LABEL, self.layout.anomaly[rows]))
        cfg = self.config
        return {
            "version": 1, "title": self.path.name, "column": self.column, "method": self.layout.method,
            "n": len(rows), "n_total": len(self), "subsampled": len(rows) < len(self), "limit": limit,
            "k": cfg.k, "metric": cfg.metric, "ids": [self.emb.ids[i] for i in rows],
            "x": encode_column(self.layout.coords[rows, 0]), "y": encode_column(self.layout.coords[rows, 1]),
            "labels": [entry for entry in labels if entry is not None],
            "anomaly": {"by": f"kNN distance, k={cfg.anomaly_k}, {cfg.anomaly_metric}",
                        "top": self.top_anomalies()},
            "default_color": None,
        }
