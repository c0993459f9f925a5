"""Search returns the query first and uses a cached index; anomaly ranking finds planted outliers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astropt.data.shards import DataError
from astropt.tasks.anomaly import anomalies, knn_scores, ranking_quality
from astropt.tasks.embed import embed
from astropt.tasks.search import search


@pytest.fixture(scope="module")
def embeddings(model_dir, shard_dir, tmp_path_factory):
    return embed(model_dir, shard_dir, tmp_path_factory.mktemp("emb") / "e.parquet", progress=False)


def test_query_by_id_comes_first_and_grid_is_drawn(embeddings, tmp_path):
    for metric in ("cosine", "l2"):
        hits = search(embeddings, "obj0007", k=5, metric=metric, out=tmp_path / f"{metric}.png")
        assert hits[0]["id"] == "obj0007" and len(hits) == 5
        assert (tmp_path / f"{metric}.png").stat().st_size > 0
    index = embeddings.with_name(embeddings.name + ".embedding.cosine.faiss")
    mtime = index.stat().st_mtime_ns
    search(embeddings, "obj0001", k=3)
    assert index.stat().st_mtime_ns == mtime  # reused, not rebuilt


def test_query_by_image_file_finds_that_object(embeddings, model_dir, shard_dir, tmp_path):
    from astropt.data.shards import ShardSet

    np.save(tmp_path / "q.npy", ShardSet(shard_dir)[12]["image"])
    hits = search(embeddings, str(tmp_path / "q.npy"), k=3, model=model_dir)
    # standardising by the set's per-dimension spread amplifies round-off in quiet dimensions
    assert hits[0]["id"] == "obj0012" and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)


def test_unknown_query_id_explains_how_to_list_ids(embeddings):
    with pytest.raises(DataError, match="not in the embeddings.*list the ids"):
        search(embeddings, "no-such-object")


def test_knn_scores_and_quality_find_planted_outliers(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 8)).astype(np.float32)
    x[:10] += 8.0 * rng.normal(size=(10, 8))  # far from everything
    truth = np.zeros(300, bool)
    truth[:10] = True
    q = ranking_quality(knn_scores(x, k=5, metric="l2"), truth, top=10)
    assert q["precision_at_k"] >= 0.9 and q["roc_auc"] > 0.95
    table = pa.table({"id": [f"o{i}" for i in range(300)],
                      "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 8),
                      "is_rare": truth})
    pq.write_table(table, tmp_path / "e.parquet")
    res = anomalies(tmp_path / "e.parquet", top=10, metric="l2", out=tmp_path / "an")
    assert res["quality"]["knn"]["precision_at_k"] >= 0.9
    assert (tmp_path / "an" / "anomalies.json").is_file()


def test_loss_ranking_runs_with_the_model(embeddings, model_dir, tmp_path):
    res = anomalies(embeddings, top=4, by="both", model=model_dir, out=tmp_path)
    assert set(res["quality"]) == {"knn", "loss", "both"}
    assert (tmp_path / "anomalies.png").is_file()
