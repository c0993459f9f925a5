"""Streaming embed: a Parquet dataset read as a stream split by rank (never prepared on
disk) gives the vectors of the prepared embed; a run stopped after some parts resumes from
its saved stream position with nothing duplicated or missing; 2 Gloo processes == 1."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tasks_fixtures import make_records, stop_after_parts
from test_embed_distributed import ENV, _kill_after_first_parts, torchrun

from astropt.errors import DataError
from astropt.tasks import embed as embed_module
from astropt.tasks.common import load_model
from astropt.tasks.embed import embed, load_embeddings
from astropt.tasks.embed_stream import open_stream

sys.path.insert(0, str(Path(__file__).parent.parent / "model"))
from hubfake import make_cache  # noqa: E402

KW = dict(part_size=4, batch_size=4, dtype="float32", device="cpu", progress=False)


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    """The task fixture's 40 objects as 3 Parquet files of a Hugging Face dataset."""
    import datasets

    folder = tmp_path_factory.mktemp("stream") / "survey"
    folder.mkdir()
    records = make_records(40)
    for k, chunk in enumerate((records[:16], records[16:28], records[28:])):
        columns = {"id": [r["id"] for r in chunk], "image": [r["image"] for r in chunk]}
        columns.update({name: [r["labels"][name] for r in chunk] for name in ("redshift", "kind")})
        datasets.Dataset.from_dict(columns).to_parquet(str(folder / f"train-{k:05d}.parquet"))
    return folder


def by_id(emb) -> dict[str, np.ndarray]:
    matrix = emb.matrix()
    return {object_id: matrix[i] for i, object_id in enumerate(emb.ids)}


def assert_same_rows(a, b) -> None:
    ea, eb = load_embeddings(a), load_embeddings(b)
    assert sorted(ea.ids) == sorted(eb.ids) and len(set(ea.ids)) == len(ea.ids)  # no duplicate, no gap
    va, vb = by_id(ea), by_id(eb)
    for object_id in ea.ids:
        np.testing.assert_array_equal(va[object_id], vb[object_id])  # bitwise (fp32 on CPU)


def test_stream_equals_prepared_embed(model_dir, parquet_dir, tmp_path):
    prepared = embed(model_dir, parquet_dir, tmp_path / "prepared", **KW)
    streamed = embed(model_dir, parquet_dir, tmp_path / "streamed", stream=True, **KW)
    assert not (tmp_path / "streamed.data").exists()  # nothing prepared on disk
    a, b = load_embeddings(prepared), load_embeddings(streamed)
    assert a.ids == b.ids  # one process reads the stream in order
    np.testing.assert_array_equal(a.matrix(), b.matrix())
    np.testing.assert_array_equal(a.labels["redshift"], b.labels["redshift"])
    assert b.meta["stream"] and b.meta["n_objects"] == 40


def test_stopped_stream_resumes_without_duplicates(model_dir, parquet_dir, tmp_path, monkeypatch):
    reference = embed(model_dir, parquet_dir, tmp_path / "ref", stream=True, **KW)
    out = tmp_path / "resumed"
    written = stop_after_parts(monkeypatch, 3)
    with pytest.raises(KeyboardInterrupt):
        embed(model_dir, parquet_dir, out, stream=True, **KW)
    state = json.loads((out / "_stream-rank00000.json").read_text())
    assert state["consumed"] == 12 and not state["done"]
    monkeypatch.setattr(embed_module, "_part_written", written.append)
    embed(model_dir, parquet_dir, out, stream=True, **KW)
    assert written[3] == 3 and len(written) == 10  # the rerun started at part 3: 7 more parts
    assert_same_rows(reference, out)


def test_a_folder_of_files_streams_in_place(model_dir, tmp_path):
    """Any other source (here a folder of .npy files) streams its object indices; each
    object's file is read by the rank that embeds it, and nothing is prepared on disk."""
    folder = tmp_path / "npy"
    folder.mkdir()
    for record in make_records(20):
        np.save(folder / f"{record['id']}.npy", record["image"])
    prepared = load_embeddings(embed(model_dir, folder, tmp_path / "prepared", **KW))
    streamed = load_embeddings(embed(model_dir, folder, tmp_path / "streamed", stream=True, **KW))
    assert not (tmp_path / "streamed.data").exists()
    assert streamed.ids == prepared.ids and len(streamed.ids) == 20
    np.testing.assert_array_equal(streamed.matrix(), prepared.matrix())


def test_hub_id_streams_offline_from_the_cache(model_dir, parquet_dir, tmp_path, monkeypatch):
    """`astropt embed --stream org/name` with HF_HUB_OFFLINE=1 reads the dataset's cached
    snapshot: the same rows as the local files."""
    from huggingface_hub import constants

    files = {f"data/{p.name}": p for p in sorted(parquet_dir.glob("*.parquet"))}
    make_cache(tmp_path / "hub", "org/survey", files, repo_type="dataset")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    local = embed(model_dir, parquet_dir, tmp_path / "local", stream=True, **KW)
    hub = embed(model_dir, "org/survey", tmp_path / "hub-id", stream=True, **KW)
    assert load_embeddings(hub).ids == load_embeddings(local).ids
    assert_same_rows(local, hub)


def test_a_save_to_disk_folder_streams_in_whole_shards_per_rank(model_dir, tmp_path):
    """A save_to_disk folder is cut into a multiple of the world size of shards, so each
    rank reads only its own rows (not every row, keeping one in W)."""
    import datasets
    from datasets.distributed import split_dataset_by_node

    records = make_records(30)
    columns = {"id": [r["id"] for r in records], "image": [r["image"] for r in records]}
    datasets.Dataset.from_dict(columns).save_to_disk(str(tmp_path / "hf"))
    model = load_model(model_dir, "cpu")
    for world, span in ((2, 4), (3, 100)):
        stream = open_stream(model, tmp_path / "hf", span=span, world=world)
        assert stream.dataset.num_shards > 1 and stream.dataset.num_shards % world == 0
        ids = [[row["id"] for row in split_dataset_by_node(stream.dataset, rank=r, world_size=world)]
               for r in range(world)]
        assert sorted(sum(ids, [])) == sorted(columns["id"])  # disjoint, nothing missing
    assert open_stream(model, tmp_path / "hf", span=4, world=1).dataset.num_shards == 8


def test_stream_limit_and_world_size_check(model_dir, parquet_dir, tmp_path):
    out = tmp_path / "w"
    assert len(load_embeddings(embed(model_dir, parquet_dir, out, stream=True, limit=6, **KW)).ids) == 6
    job = json.loads((out / "_job.json").read_text())
    (out / "_job.json").write_text(json.dumps({**job, "world_size": 2}))
    with pytest.raises(DataError, match="saved by 2 processes"):
        embed(model_dir, parquet_dir, out, stream=True, limit=6, **KW)


def test_two_process_stream_equals_one(model_dir, parquet_dir, tmp_path):
    single = embed(model_dir, parquet_dir, tmp_path / "one", stream=True, **KW)
    cmd = [*torchrun(2, model_dir, parquet_dir, tmp_path / "two", part_size=4), "--batch-size", "4", "--stream"]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(single, tmp_path / "two")
    assert json.loads((tmp_path / "two" / "_manifest.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_two_process_stream_killed_resumes(model_dir, parquet_dir, tmp_path):
    """SIGKILL both ranks after a part, rerun with 2: same rows; with 1: refused (the split
    of the stream depends on the world size)."""
    single = embed(model_dir, parquet_dir, tmp_path / "one", stream=True, **KW)
    out = tmp_path / "two"
    cmd = [*torchrun(2, model_dir, parquet_dir, out, part_size=2), "--batch-size", "4", "--stream"]
    assert _kill_after_first_parts(cmd, out), "the run finished before it could be killed"
    assert not (out / "_manifest.json").exists()
    alone = [*torchrun(1, model_dir, parquet_dir, out, part_size=2), "--batch-size", "4", "--stream"]
    proc = subprocess.run(alone, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0 and "saved by 2 processes" in proc.stderr
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_rows(single, out)
