"""Similarity search over embeddings with FAISS: by object id or by a new image file.

The exact index (``IndexFlatIP`` on L2-normalised vectors for cosine, ``IndexFlatL2`` for
Euclidean distance) is built once and saved beside the embeddings
(``FILE.<column>.<metric>.faiss``); it is rebuilt only when the embeddings file changed
(size or modification time recorded in a small JSON beside it).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from astropt.atomic import atomic_path, atomic_write_text
from astropt.data.loader import Collator
from astropt.errors import DataError
from astropt.model import AstroPT
from astropt.runtime import resolve_dtype
from astropt.tasks import ann
from astropt.tasks.common import images_for_ids, load_model, open_data
from astropt.tasks.embed import embed_batch
from astropt.tasks.embeddings import (
    MANIFEST_NAME,
    Embeddings,
    VectorBatches,
    default_column,
    embedding_files,
    label_columns,
    load_embeddings,
)

log = logging.getLogger(__name__)
# faiss logs each SIMD build it fails to load at INFO level; that is noise to a user.
logging.getLogger("faiss.loader").setLevel(logging.WARNING)
import faiss  # noqa: E402

METRICS = ("cosine", "l2")


def standardizer(vectors: np.ndarray | VectorBatches) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and scale of a set of embeddings (an array, or batches read
    part by part: combined with Chan's pairwise update, stable for large constant values).

    Transformer hidden states carry a few dimensions of very large, nearly constant value;
    left alone they dominate cosine similarity (every pair scores ~1). Distances are
    therefore taken between embeddings standardised with the statistics of the whole set.
    """
    batches = VectorBatches.of_array(vectors) if isinstance(vectors, np.ndarray) else vectors
    n, mean, m2 = 0, np.zeros(batches.d), np.zeros(batches.d)
    for batch in batches:
        x = np.asarray(batch, dtype=np.float64)
        n_b, mean_b = len(x), x.mean(axis=0)
        delta = mean_b - mean
        mean = mean + delta * n_b / (n + n_b)
        m2 = m2 + ((x - mean_b) ** 2).sum(axis=0) + delta**2 * n * n_b / (n + n_b)
        n += n_b
    return mean, np.sqrt(m2 / max(n, 1)) + 1e-6


def prepare_vectors(x: np.ndarray, metric: str, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    if stats is not None:
        x = (np.asarray(x, dtype=np.float64) - stats[0]) / stats[1]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if metric == "cosine":
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    return x


def build_index(
    vectors: np.ndarray | VectorBatches, metric: str = "cosine", stats: tuple[np.ndarray, np.ndarray] | None = None,
    kind: str = "flat", chunk: int = 100_000,
) -> faiss.Index:
    """A FAISS index over ``vectors`` (standardised with ``stats`` if given) for ``metric``
    (``cosine`` or ``l2``): exact (``flat``, the default) or approximate (``hnsw``,
    ``ivfpq``, or ``auto`` by size: see :mod:`astropt.tasks.ann`), filled batch by batch
    (from an array in ``chunk`` rows, or from :class:`VectorBatches` read part by part, so
    the vectors are only held by the index)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    batches = VectorBatches.of_array(vectors, chunk) if isinstance(vectors, np.ndarray) else vectors
    kind = ann.choose_kind(batches.n, kind)
    sample = None
    if kind == "ivfpq":
        pick = np.random.default_rng(0).choice(batches.n, size=min(batches.n, 256 * 256), replace=False)
        sample = prepare_vectors(batches.rows(np.sort(pick)), metric, stats)
    chunks = (prepare_vectors(batch, metric, stats) for batch in batches)
    return ann.build(chunks, batches.n, batches.d, kind, metric, train_sample=sample)


def index_recall(index: faiss.Index, vectors: np.ndarray | VectorBatches, metric: str, stats, k: int = 10,
                 n_queries: int = 500) -> float:
    """recall@k of ``index`` against exact search, on a sample of the vectors as queries."""
    batches = VectorBatches.of_array(vectors) if isinstance(vectors, np.ndarray) else vectors
    exact = build_index(batches, metric, stats, kind="flat")
    pick = np.random.default_rng(1).choice(batches.n, size=min(n_queries, batches.n), replace=False)
    return ann.recall_at_k(index, exact, prepare_vectors(batches.rows(np.sort(pick)), metric, stats), k)


def cached_index(
    path: str | os.PathLike,
    emb: Embeddings | None,
    column: str,
    metric: str,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
    kind: str = "auto",
) -> faiss.Index:
    """The saved index of ``path``'s ``column``, rebuilt when the embeddings changed
    (``kind``: see :mod:`astropt.tasks.ann`; approximate ones record their recall@10).
    Built from ``emb`` when given, else from ``path`` read part by part."""
    path = Path(path)
    vectors = VectorBatches.of_array(emb.matrix(column)) if emb is not None else VectorBatches.of_file(path, column)
    index_path = path.with_name(f"{path.name}.{column}.{metric}.faiss")
    stamp_path = index_path.with_name(index_path.name + ".json")
    stat = (path / MANIFEST_NAME if path.is_dir() else path).stat()
    kind = ann.choose_kind(vectors.n, kind)
    stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "n": vectors.n,
             "standardized": stats is not None, "kind": kind}
    if index_path.is_file() and stamp_path.is_file():
        saved = json.loads(stamp_path.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return faiss.read_index(str(index_path))
    index = build_index(vectors, metric, stats, kind=kind)
    if kind != "flat":
        stamp["recall_at_10"] = index_recall(index, vectors, metric, stats)
        log.info("approximate %s index: recall@10 %.3f against exact search (500 queries)", kind,
                 stamp["recall_at_10"])
    with atomic_path(index_path) as tmp:
        faiss.write_index(index, str(tmp))
    atomic_write_text(stamp_path, json.dumps(stamp))
    log.info("built %s index of %d vectors -> %s", metric, index.ntotal, index_path)
    return index


def nearest(
    index: faiss.Index,
    ids: list[str],
    vectors: np.ndarray,
    k: int,
    metric: str,
    stats: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[list[dict[str, Any]]]:
    """The ``k`` nearest objects of each row of ``vectors``: ``[[{"rank", "id", "score"}]]``."""
    scores, rows = index.search(prepare_vectors(vectors, metric, stats), min(k, index.ntotal))
    return [[{"rank": r, "id": ids[i], "score": float(s)} for r, (i, s) in enumerate(zip(row, score, strict=True))
             if i >= 0] for row, score in zip(rows, scores, strict=True)]


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """A ``(C, H, W)`` float32 image from ``.npy``, FITS or an ordinary picture (PNG/JPEG)."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]).lower()
    if path.suffix.lower() == ".npy":
        image = np.load(path)
    elif any(suffix.endswith(s) for s in (".fits", ".fit", ".fits.gz", ".fz")):
        from astropy.io import fits

        with fits.open(path) as hdul:
            image = next((h.data for h in hdul if h.data is not None), None)
        if image is None:
            raise DataError(f"{path}: no image data in any HDU")
    else:
        from PIL import Image

        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB")).transpose(2, 0, 1)
        except OSError as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from exc
    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 2:
        image = image[None]
    if image.ndim != 3:
        raise DataError(f"{path}: expected a 2-D image or (C, H, W) cube, got shape {image.shape}")
    return image


def embed_image(model: AstroPT, image: np.ndarray, meta: dict[str, Any]) -> np.ndarray:
    """Embed one image the way the embeddings file was made (layer, pooling, dtype from ``meta``)."""
    images = [m for m in model.config.modalities if m.kind == "image"]
    if not images:
        raise DataError("the model has no image modality; cannot embed an image query")
    batch, _ = Collator(images[:1])([{"id": "query image", images[0].field: image}])
    layer = meta.get("layer")
    layer = None if layer in (None, "all") or isinstance(layer, list) else int(layer)  # list: embed_layers
    amp = resolve_dtype(meta.get("dtype", "float32"), "cpu")
    return embed_batch(model, batch, layer, False, meta.get("pool"), "cpu", amp)["embedding"]


def search(
    embeddings: str | os.PathLike,
    query: str,
    k: int = 16,
    metric: str = "cosine",
    column: str | None = None,
    standardize: bool = True,
    model: AstroPT | str | os.PathLike | None = None,
    data: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    index: str = "auto",
) -> list[dict[str, Any]]:
    """The ``k`` nearest objects to ``query`` (an object id, or an image file with ``model``).

    Querying by id returns the object itself first. With ``standardize`` (default) each
    embedding dimension is centred and scaled by the statistics of the whole set first. With ``out`` a PNG grid of the query and
    its neighbours is written (images from ``data``, default: the data that was embedded).

    ``index``: ``auto`` (exact up to 200k objects, then approximate), ``flat``, ``hnsw`` or
    ``ivfpq`` (see :mod:`astropt.tasks.ann`).

    Returns:
        ``[{"rank", "id", "score"}]``; score is cosine similarity or squared L2 distance.
    """
    if k < 1:
        raise ValueError(f"k (-k, the number of neighbours) must be at least 1, got {k}")
    # ids and labels in memory; the vectors only in the index (read part by part)
    files = embedding_files(embeddings)
    emb = load_embeddings(embeddings, columns=label_columns(files.schema))
    column = column or default_column(files.schema)
    vectors = VectorBatches.of_file(embeddings, column)
    stats = standardizer(vectors) if standardize else None
    index = cached_index(embeddings, None, column, metric, stats, kind=index)
    query_image = None
    if Path(query).is_file():
        if model is None:
            raise ValueError(f"query {query} is an image file: pass the model that made the embeddings")
        query_image = read_image_file(query)
        vector = embed_image(load_model(model), query_image, emb.meta)
    else:
        vector = vectors.rows(np.array([emb.index_of(query)]))
    hits = nearest(index, emb.ids, vector, k, metric, stats)[0]
    if out is not None:
        _grid(hits, query, query_image, data or emb.meta.get("data"), Path(out))
    return hits


def _grid(hits, query: str, query_image, data, out: Path) -> None:
    from astropt import viz

    if not data or not Path(data).exists():
        log.warning("no data folder to draw thumbnails from (pass data=...); skipping %s", out)
        return
    shards = open_data(data)
    images = images_for_ids(shards, [h["id"] for h in hits])
    titles = [f"{h['id']}\n{h['score']:.3f}" for h in hits]
    if query_image is not None:
        images, titles = [query_image, *images], ["query", *titles]
    viz.galaxy_grid(images, out, titles, title=f"neighbours of {Path(query).name}")
