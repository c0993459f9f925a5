"""Anomaly ranking: objects far from their neighbours in embedding space, or badly predicted.

``knn``: mean distance to the ``k`` nearest other objects (FAISS, cosine or L2).
``loss``: the model's own next-token loss of each object (needs the model and the data).
``both``: the mean of the two rank-normalised scores. When the data carry the truth
(``is_rare`` or ``kind != "normal"``, as the synthetic survey does), precision@top and ROC
AUC of the ranking are reported.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score

from astropt.atomic import atomic_write_text
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.model import AstroPT
from astropt.tasks.common import (
    images_for_ids,
    load_model,
    model_batches,
    open_data,
    rare_flags,
    used_modalities,
)
from astropt.tasks.embeddings import (
    VectorBatches,
    default_column,
    embedding_files,
    label_columns,
    load_embeddings,
)
from astropt.tasks.search import build_index, prepare_vectors, standardizer

log = logging.getLogger(__name__)


def knn_scores(vectors: np.ndarray | VectorBatches, k: int = 10, metric: str = "cosine") -> np.ndarray:
    """Mean distance of each vector to its ``k`` nearest other vectors (the vectors are
    read batch by batch: into the index, then as queries)."""
    batches = VectorBatches.of_array(vectors) if isinstance(vectors, np.ndarray) else vectors
    if batches.n < 2:
        raise DataError("anomaly ranking needs at least 2 objects")
    k = min(k, batches.n - 1)
    stats = standardizer(batches)  # see search.standardizer: no dimension may dominate
    index = build_index(batches, metric, stats)
    out = []
    for batch in batches:
        scores, _ = index.search(prepare_vectors(batch, metric, stats), k + 1)
        dist = 1.0 - scores if metric == "cosine" else np.sqrt(np.maximum(scores, 0))
        out.append(dist[:, 1:].mean(axis=1))  # column 0 is the object itself
    return np.concatenate(out)


@torch.no_grad()
def loss_scores(model: AstroPT, data: ShardSet, ids: list[str], batch_size: int = 64) -> np.ndarray:
    """Per-object next-token loss (the training loss of each object), in the order of ``ids``."""
    configs = used_modalities(model, data)
    row_of = {object_id: k for k, object_id in enumerate(data.ids)}
    rows = np.array([row_of[i] for i in ids])
    batches = model_batches(data, rows, batch_size, configs)
    return np.concatenate([model.loss(batch, per_object=True).numpy() for _, _, batch in batches])


def ranking_quality(scores: np.ndarray, truth: np.ndarray, top: int) -> dict[str, float]:
    """Precision of the ``top`` highest scores and ROC AUC against boolean ``truth``."""
    order = np.argsort(-scores, kind="stable")
    out = {"precision_at_k": float(truth[order[:top]].mean()), "k": int(top), "n_rare": int(truth.sum())}
    if 0 < truth.sum() < len(truth):
        out["roc_auc"] = float(roc_auc_score(truth, scores))
    return out


def anomalies(
    embeddings: str | os.PathLike,
    top: int = 50,
    k: int = 10,
    metric: str = "l2",
    by: str = "knn",
    model: AstroPT | str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    column: str | None = None,
) -> dict[str, Any]:
    """Rank objects by how anomalous they are; write ``anomalies.json`` and a PNG grid to ``out``.

    Args:
        by: ``knn``, ``loss`` or ``both`` (loss needs ``model``; data defaults to the
            data that was embedded).
    """
    if by not in ("knn", "loss", "both"):
        raise ValueError(f"unknown ranking {by!r}; choose knn, loss or both")
    if top < 1:
        raise ValueError(f"top (--top) must be at least 1, got {top}")
    if k < 1:
        raise ValueError(f"k (-k, neighbours of the kNN score) must be at least 1, got {k}")
    # ids and labels in memory; the vectors only in the index (read part by part)
    files = embedding_files(embeddings)
    emb = load_embeddings(embeddings, columns=label_columns(files.schema))
    data = data or emb.meta.get("data")
    scores: dict[str, np.ndarray] = {}
    if by in ("knn", "both"):
        scores["knn"] = knn_scores(VectorBatches.of_file(embeddings, column or default_column(files.schema)), k,
                                   metric)
    if by in ("loss", "both"):
        if model is None or not data:
            raise ValueError("ranking by loss needs the model and the data")
        scores["loss"] = loss_scores(load_model(model), open_data(data), emb.ids)
    final = scores[by] if by != "both" else np.mean([rankdata(s) / len(s) for s in scores.values()], axis=0)
    top = min(top, len(final))
    order = np.argsort(-final, kind="stable")
    result: dict[str, Any] = {
        "by": by, "k": k, "metric": metric,
        "top": [{"rank": r, "id": emb.ids[i], "score": float(final[i])} for r, i in enumerate(order[:top])],
    }
    truth = rare_flags(emb.labels)
    if truth is not None:
        result["quality"] = {name: ranking_quality(s, truth, top) for name, s in scores.items()}
        if by == "both":
            result["quality"]["both"] = ranking_quality(final, truth, top)
    if out is not None:
        _write(result, truth, order[:top], emb.ids, data, Path(out))
    return result


def _write(result, truth, rows, ids, data, out: Path) -> None:
    from astropt import viz

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "anomalies.json", json.dumps(result, indent=2))
    if not data or not Path(data).exists():
        log.warning("no data folder for thumbnails; skipping the anomaly grid")
        return
    shown = rows[:32]
    images = images_for_ids(open_data(data), [ids[i] for i in shown])
    titles = [f"#{r} {ids[i]}" for r, i in enumerate(shown)]
    highlight = None if truth is None else [bool(truth[i]) for i in shown]
    viz.galaxy_grid(images, out / "anomalies.png", titles, title="most anomalous (red frame: labelled rare)",
                    highlight=highlight)
