"""Approximate nearest-neighbour indexes for surveys too large for exact search.

An exact flat index compares a query with every vector: fine to ~10^5 objects, slow at
10^7, impossible in memory at 10^9 x 768 floats (~3 TB). ``choose_kind`` picks by size:

- ``flat`` (exact) below ``FLAT_MAX`` vectors;
- ``hnsw`` (graph, ~1.1x the vectors' memory, no training) below ``HNSW_MAX``;
- ``ivfpq`` (inverted lists + product quantisation, ~``d/4`` bytes a vector) above, trained
  on a sample and filled chunk by chunk, so the vectors never need to be in memory at once.

:func:`recall_at_k` measures what the approximation costs against exact search on a
sample of queries; the search task reports it when it builds an approximate index.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import faiss

import numpy as np

IndexKind = Literal["auto", "flat", "hnsw", "ivfpq"]
INDEX_KINDS: tuple[str, ...] = ("auto", "flat", "hnsw", "ivfpq")
FLAT_MAX = 200_000
HNSW_MAX = 5_000_000

log = logging.getLogger(__name__)


def _faiss():
    """faiss, imported when an index is made (the CLI reads INDEX_KINDS without it)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # SIMD probing noise
    import faiss

    return faiss


def choose_kind(n: int, kind: str = "auto") -> str:
    """The index kind for ``n`` vectors (``kind`` unless it is ``auto``)."""
    if kind not in INDEX_KINDS:
        raise ValueError(f"unknown index kind {kind!r}; choose from {INDEX_KINDS}")
    if kind != "auto":
        return kind
    return "flat" if n <= FLAT_MAX else "hnsw" if n <= HNSW_MAX else "ivfpq"


def _metric(metric: str) -> int:
    faiss = _faiss()
    # cosine: vectors are L2-normalised by the caller, so inner product ranks as cosine.
    return faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2


def new_index(d: int, n: int, kind: str, metric: str) -> faiss.Index:
    """An empty index of ``kind`` for ``n`` vectors of width ``d``."""
    faiss = _faiss()
    m = _metric(metric)
    if kind == "flat":
        return faiss.IndexFlatIP(d) if m == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32, m)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
        return index
    if kind == "ivfpq":
        nlist = int(max(16, min(65536, 4 * np.sqrt(n))))
        sub = next(s for s in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if d % s == 0 and s <= d)
        quantizer = faiss.IndexFlatIP(d) if m == faiss.METRIC_INNER_PRODUCT else faiss.IndexFlatL2(d)
        index = faiss.IndexIVFPQ(quantizer, d, nlist, sub, 8, m)
        index.nprobe = max(8, nlist // 16)
        return index
    raise ValueError(f"unknown index kind {kind!r}; choose from {INDEX_KINDS[1:]}")


def build(chunks: Iterable[np.ndarray], n: int, d: int, kind: str, metric: str,
          train_sample: np.ndarray | None = None) -> faiss.Index:
    """Fill an index of ``kind`` from ``chunks`` of prepared float32 vectors (``n`` in all).

    ``ivfpq`` is trained on ``train_sample`` (default: the first chunk) first.
    """
    index = new_index(d, n, kind, metric)
    chunks = iter(chunks)
    first = next(chunks, None)
    if not index.is_trained:
        sample = first if train_sample is None else train_sample
        if sample is None or len(sample) < index.nlist:
            raise ValueError(f"an ivfpq index of {index.nlist} lists needs at least that many training vectors")
        index.train(np.ascontiguousarray(sample, dtype=np.float32))
    for chunk in itertools.chain([] if first is None else [first], chunks):
        index.add(np.ascontiguousarray(chunk, dtype=np.float32))
    return index


def recall_at_k(approx: faiss.Index, exact: faiss.Index, queries: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each query's exact ``k`` nearest neighbours that ``approx`` finds."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    _, truth = exact.search(q, k)
    _, found = approx.search(q, k)
    hits = [len(set(t) & set(f)) for t, f in zip(truth.tolist(), found.tolist(), strict=True)]
    return float(np.mean(hits) / k)
