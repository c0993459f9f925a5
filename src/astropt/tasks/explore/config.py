"""Settings of the explorer: one typed dataclass, validated once here."""

from __future__ import annotations

from dataclasses import dataclass

from astropt.tasks.search import METRICS

METHODS = ("auto", "pca", "umap")


@dataclass
class ExploreConfig:
    """What the explorer shows and how it finds neighbours and anomalies."""

    column: str | None = None
    """Embedding column to explore (default: the file's default column)."""
    method: str = "auto"
    """2-D layout: ``umap`` (needs the ``umap`` extra), ``pca``, or ``auto`` (UMAP if installed)."""
    k: int = 16
    """Neighbours shown for a clicked object (the query itself first, as ``astropt search``)."""
    metric: str = "cosine"
    """Neighbour metric, as ``astropt search --metric``."""
    anomaly_k: int = 10
    """Neighbours of the kNN anomaly score, as ``astropt anomalies -k``."""
    anomaly_metric: str = "l2"
    """Distance of the kNN anomaly score, as ``astropt anomalies --metric``."""
    top: int = 50
    """Objects in the "most anomalous" panel."""
    static_limit: int = 20000
    """Most points written into a ``--static`` page (a random subsample plus the top anomalies)."""
    static_thumbnails: int = 2000
    """Most thumbnails embedded into a ``--static`` page (the top anomalies first)."""
    seed: int = 0
    """Seed of the layout and of the static subsample."""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown layout method {self.method!r}; choose from {METHODS}")
        for name, value in (("metric", self.metric), ("anomaly_metric", self.anomaly_metric)):
            if value not in METRICS:
                raise ValueError(f"unknown {name} {value!r}; choose from {METRICS}")
        for name in ("k", "anomaly_k", "top", "static_limit"):
            if getattr(self, name) < 1:
                raise ValueError(f"explore setting {name} must be at least 1, got {getattr(self, name)}")
        if self.static_thumbnails < 0:
            raise ValueError(f"static_thumbnails must be >= 0, got {self.static_thumbnails}")
