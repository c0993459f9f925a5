"""Embedding resumes only over the data it started on, has one writer per output, and
never writes or ranks non-finite vectors; search/anomalies check their arguments."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from tasks_fixtures import make_records, write_shards

from astropt.cli import main
from astropt.data.shards import DataError
from astropt.locks import OutputLocked, write_holder
from astropt.tasks import embed as embed_module
from astropt.tasks.anomaly import anomalies
from astropt.tasks.embed import embed, load_embeddings
from astropt.tasks.search import search


def test_resume_over_replaced_data_of_the_same_count_redoes_the_parts(model_dir, tmp_path, monkeypatch):
    data = write_shards(tmp_path / "data", make_records(24, seed=0))
    out = tmp_path / "e.parquet"

    def killed(k):
        if k == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(embed_module, "_part_written", killed)
    with pytest.raises(KeyboardInterrupt):
        embed(model_dir, data, out, part_size=8, dtype="float32", progress=False)
    shutil.rmtree(data)
    write_shards(data, make_records(24, seed=5))  # other objects, same ids and count
    monkeypatch.setattr(embed_module, "_part_written", lambda k: None)
    resumed = load_embeddings(embed(model_dir, data, out, part_size=8, dtype="float32", progress=False))
    fresh = load_embeddings(embed(model_dir, data, tmp_path / "f.parquet", part_size=8, dtype="float32",
                                  progress=False))
    np.testing.assert_array_equal(resumed.matrix(), fresh.matrix())


@pytest.fixture
def live_holder():
    """A process that is alive for the test, standing for another writer."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


def test_a_second_writer_into_one_output_is_refused_naming_the_holder(model_dir, shard_dir, tmp_path, live_holder):
    out = tmp_path / "e.parquet"
    write_holder(out, pid=live_holder)
    with pytest.raises(OutputLocked, match=rf"pid {live_holder}.*{os.uname().nodename}"):
        embed(model_dir, shard_dir, out, progress=False)
    assert not out.exists()


def test_a_stale_lock_of_a_dead_process_is_taken_over(model_dir, shard_dir, tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    out = tmp_path / "e.parquet"
    write_holder(out, pid=proc.pid)
    assert load_embeddings(embed(model_dir, shard_dir, out, progress=False)).ids
    assert not out.with_name(out.name + ".lock").exists()


def nan_embeddings(path, bad=(2,)):
    vectors = np.random.default_rng(0).normal(size=(10, 4)).astype(np.float32)
    vectors[list(bad)] = np.nan
    flat = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), 4)
    pq.write_table(pa.table({"id": [f"o{i}" for i in range(10)], "embedding": flat}), path)
    return path


def test_anomalies_and_search_refuse_non_finite_embeddings_naming_them(tmp_path):
    path = nan_embeddings(tmp_path / "nan.parquet")
    with pytest.raises(DataError, match="'o2'"):
        anomalies(path, top=3, k=2)
    with pytest.raises(DataError, match="'o2'"):
        search(path, "o1", k=3)


@pytest.mark.parametrize(
    "argv",
    [["search", "{e}", "--query", "o1", "-k", "0"], ["anomalies", "{e}", "--top", "-1"],
     ["anomalies", "{e}", "-k", "0"]],
)
def test_search_and_anomaly_counts_must_be_positive(tmp_path, capsys, argv):
    path = nan_embeddings(tmp_path / "e.parquet", bad=())
    assert main([a.format(e=path) for a in argv]) == 2
    assert "must be" in capsys.readouterr().err


def test_a_full_disk_names_the_file_and_keeps_the_finished_parts(model_dir, shard_dir, tmp_path, monkeypatch):
    import errno

    from astropt import atomic
    from astropt.atomic import DiskFullError

    out = tmp_path / "e.parquet"
    real, calls = atomic.os.fsync, []

    def fills_up(fd):
        calls.append(fd)
        if len(calls) > 4:  # meta.json and the first part fit (a file and its folder each)
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fills_up)
    with pytest.raises(DiskFullError, match=r"part-000001\.parquet.*disk is full"):
        embed(model_dir, shard_dir, out, part_size=16, progress=False)
    monkeypatch.undo()
    assert [p.name for p in sorted((tmp_path / "e.parquet.parts").glob("part-*"))] == ["part-000000.parquet"]
    done = []
    monkeypatch.setattr(embed_module, "_part_written", done.append)
    embed(model_dir, shard_dir, out, part_size=16, progress=False)
    assert done == [1, 2]


def test_a_nan_pixel_is_blamed_on_its_object_not_its_batch(model_dir, tmp_path):
    records = make_records(12)
    records[5]["image"][0, 3, 3] = np.nan
    data = write_shards(tmp_path / "data", records)
    with pytest.raises(ValueError, match=r"objects \['obj0005'\]") as info:
        embed(model_dir, data, tmp_path / "e.parquet", batch_size=4, progress=False)
    assert "obj0004" not in str(info.value)


def test_non_finite_weights_give_an_error_not_nan_embeddings(model_dir, shard_dir, tmp_path):
    import torch

    from astropt.model import load_pretrained

    model = load_pretrained(model_dir)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    with pytest.raises(DataError, match=r"non-finite \(NaN/Inf\) embeddings for 40 of 40"):
        embed(model, shard_dir, tmp_path / "e.parquet", progress=False)
    assert not (tmp_path / "e.parquet").exists()
