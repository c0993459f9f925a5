"""Reading embeddings part by part: ``iter_embeddings`` yields the table's rows in order in
batches bounded by ``batch_rows``; the search/anomaly index built from a partitioned
folder read that way equals the one built from the merged table in memory."""

import numpy as np
import pytest

from astropt.errors import DataError
from astropt.tasks.anomaly import anomalies, knn_scores
from astropt.tasks.embed import embed
from astropt.tasks.embeddings import VectorBatches, iter_embeddings, load_embeddings
from astropt.tasks.search import build_index, search, standardizer

KW = dict(part_size=8, dtype="float32", device="cpu", progress=False)


@pytest.fixture(scope="module")
def outputs(model_dir, shard_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("reader")
    return embed(model_dir, shard_dir, folder / "one.parquet", **KW), embed(model_dir, shard_dir, folder / "parts", **KW)


def test_iterator_yields_bounded_batches_in_order(outputs):
    merged, folder = outputs
    whole = load_embeddings(merged)
    for path in outputs:
        batches = list(iter_embeddings(path, ["embedding"], batch_rows=3))
        assert all(1 <= len(b.ids) <= 3 for b in batches)
        assert [i for b in batches for i in b.ids] == whole.ids
        np.testing.assert_array_equal(np.concatenate([b.matrix() for b in batches]), whole.matrix())
        assert all(set(b.vectors) == {"embedding"} and not b.labels for b in batches)  # only what was asked
    with pytest.raises(DataError, match="no column"):
        next(iter_embeddings(folder, ["nope"]))
    with pytest.raises(ValueError, match="batch_rows"):
        next(iter_embeddings(folder, batch_rows=0))


def test_index_from_parts_equals_index_from_merged_table(outputs):
    merged, folder = outputs
    matrix = load_embeddings(merged).matrix()
    parts = VectorBatches.of_file(folder, "embedding", batch_rows=5)
    assert (parts.n, parts.d) == matrix.shape
    stats = standardizer(matrix)
    np.testing.assert_allclose(stats[0], matrix.astype(np.float64).mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(stats[1], matrix.astype(np.float64).std(axis=0) + 1e-6, rtol=1e-10)
    streamed = standardizer(parts)
    np.testing.assert_allclose(streamed[0], stats[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(streamed[1], stats[1], rtol=1e-10)
    for metric in ("cosine", "l2"):
        a, b = build_index(matrix, metric, stats), build_index(parts, metric, stats)
        assert a.ntotal == b.ntotal == len(matrix)
        np.testing.assert_array_equal(a.reconstruct_n(0, a.ntotal), b.reconstruct_n(0, b.ntotal))
    np.testing.assert_allclose(knn_scores(parts, 5, "l2"), knn_scores(matrix, 5, "l2"), rtol=1e-6)


def test_tasks_on_a_folder_equal_the_merged_file(outputs):
    merged, folder = outputs
    query = load_embeddings(merged).ids[3]
    hits_file, hits_folder = search(merged, query, k=5), search(folder, query, k=5)
    assert [h["id"] for h in hits_file] == [h["id"] for h in hits_folder] and hits_folder[0]["id"] == query
    np.testing.assert_allclose([h["score"] for h in hits_file], [h["score"] for h in hits_folder], rtol=1e-5)
    assert anomalies(merged, top=5)["top"] == anomalies(folder, top=5)["top"]
