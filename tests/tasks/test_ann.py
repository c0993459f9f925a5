"""Approximate indexes: the kind chosen by size, recall against exact search, and the search
task using and recording them."""

import json

import numpy as np
import pytest

from astropt.tasks import ann
from astropt.tasks.search import build_index, index_recall, prepare_vectors


def clustered(n=6000, d=32, centres=40, seed=0):
    rng = np.random.default_rng(seed)
    c = rng.normal(size=(centres, d)) * 3
    return (c[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def test_kind_by_size():
    assert ann.choose_kind(1_000) == "flat"
    assert ann.choose_kind(1_000_000) == "hnsw"
    assert ann.choose_kind(100_000_000) == "ivfpq"
    assert ann.choose_kind(10, "hnsw") == "hnsw"
    with pytest.raises(ValueError, match="unknown index kind"):
        ann.choose_kind(10, "annoy")


@pytest.mark.parametrize("kind, floor", [("hnsw", 0.95), ("ivfpq", 0.5)])
def test_recall_against_exact(kind, floor):
    x = clustered()
    index = build_index(x, "cosine", None, kind=kind, chunk=1000)  # filled in chunks
    assert index.ntotal == len(x)
    assert index_recall(index, x, "cosine", None) >= floor
    exact = build_index(x, "cosine", None, kind="flat")
    assert ann.recall_at_k(exact, exact, prepare_vectors(x[:50], "cosine"), 10) == 1.0


def test_search_uses_and_records_an_approximate_index(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from astropt.tasks.search import search

    x = clustered(n=2000)
    table = pa.table({"id": [f"o{i}" for i in range(len(x))],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])})
    path = tmp_path / "emb.parquet"
    pq.write_table(table, path)
    exact = [h["id"] for h in search(path, "o7", k=10, index="flat")]
    approx = [h["id"] for h in search(path, "o7", k=10, index="hnsw")]
    assert exact[0] == approx[0] == "o7" and len(set(exact) & set(approx)) >= 9
    stamp = json.loads((tmp_path / "emb.parquet.embedding.cosine.faiss.json").read_text())
    assert stamp["kind"] == "hnsw" and stamp["recall_at_10"] >= 0.95
