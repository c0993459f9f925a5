"""The explorer's 2-D layout and anomaly score, computed once and cached beside the embeddings.

``FILE.explore.<column>.<method>.npz`` holds the layout (``coords``, ``(n, 2)``) and the kNN
anomaly score of every object (``anomaly``, ``(n,)``, as ``astropt anomalies`` ranks them); a
JSON stamp beside it records the embeddings file's size and modification time and the
settings, and the cache is recomputed when any of them changed.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from astropt.atomic import atomic_write_bytes, atomic_write_text
from astropt.tasks.anomaly import knn_scores
from astropt.tasks.embed import Embeddings
from astropt.tasks.explore.config import ExploreConfig
from astropt.tasks.map import project_2d

log = logging.getLogger(__name__)
LAYOUT_VERSION = 1


@dataclass
class Layout:
    """Map positions normalised into ``[-1, 1]`` (one scale for both axes) and anomaly scores."""

    coords: np.ndarray  # (n, 2) float32
    anomaly: np.ndarray  # (n,) float32
    method: str


def resolve_method(method: str) -> str:
    """``auto`` -> ``umap`` when the umap extra is installed, else ``pca``."""
    if method != "auto":
        return method
    return "umap" if importlib.util.find_spec("umap") is not None else "pca"


def normalise(coords: np.ndarray, margin: float = 0.95) -> np.ndarray:
    """Centre ``(n, 2)`` positions and scale them by one factor into ``[-margin, margin]``."""
    x = np.asarray(coords, dtype=np.float64)
    lo, hi = x.min(axis=0), x.max(axis=0)
    half = float((hi - lo).max()) / 2 or 1.0
    return ((x - (lo + hi) / 2) * (margin / half)).astype(np.float32)


def cached_layout(path: str | os.PathLike, emb: Embeddings, column: str, config: ExploreConfig) -> Layout:
    """The layout and anomaly scores of ``path``'s ``column``, recomputed when stale."""
    path = Path(path)
    method = resolve_method(config.method)
    cache = path.with_name(f"{path.name}.explore.{column}.{method}.npz")
    stamp_path = cache.with_name(cache.name + ".json")
    stat = path.stat()
    stamp = {"version": LAYOUT_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
             "n": len(emb.ids), "seed": config.seed, "anomaly_k": config.anomaly_k,
             "anomaly_metric": config.anomaly_metric}
    if cache.is_file() and stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        with np.load(cache) as saved:
            return Layout(saved["coords"], saved["anomaly"], method)
    vectors = emb.matrix(column)
    if len(vectors) < 3:
        raise ValueError(f"{path}: {len(vectors)} objects are too few to map; embed at least 3")
    log.info("computing the %s layout and anomaly scores of %d objects (cached in %s)",
             method.upper(), len(vectors), cache.name)
    layout = Layout(normalise(project_2d(vectors, method, config.seed)),
                    knn_scores(vectors, config.anomaly_k, config.anomaly_metric).astype(np.float32), method)
    buffer = io.BytesIO()
    np.savez(buffer, coords=layout.coords, anomaly=layout.anomaly)
    atomic_write_bytes(cache, buffer.getvalue())
    atomic_write_text(stamp_path, json.dumps(stamp))
    return layout
