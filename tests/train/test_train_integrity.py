"""Training refuses to resume over unreadable checkpoints, keeps valid ones, has one writer
per run folder, names the object behind a NaN, and reports a full disk."""

from __future__ import annotations

import errno
import subprocess
import sys

import numpy as np
import pytest
from train_fixtures import tiny_config

from astropt import atomic
from astropt.atomic import DiskFullError
from astropt.data.shards import ArraySpec, finalize, write_shard
from astropt.locks import OutputLocked, write_holder
from astropt.train import checkpoint as ckpt
from astropt.train.logging import read_metrics
from astropt.train.loop import TrainingError, train


def test_resume_with_every_checkpoint_unreadable_stops_and_keeps_the_metrics(shard_dir, tmp_path):
    run = train(tiny_config(shard_dir, tmp_path / "run"))
    before = read_metrics(run)
    for _, path in ckpt.list_checkpoints(run):
        path.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"(?s)unreadable.*--overwrite"):
        train(tiny_config(shard_dir, tmp_path / "run"), resume=True)
    assert read_metrics(run) == before


def test_retention_counts_only_valid_checkpoints(shard_dir, tmp_path):
    run = train(tiny_config(shard_dir, tmp_path / "run", "train.keep_last=1"))
    ckpt.checkpoint_path(run, 99).write_bytes(b"damaged")  # sorts after every new checkpoint
    train(tiny_config(shard_dir, tmp_path / "run", "train.keep_last=1", "train.max_steps=12"), resume=True)
    assert ckpt.load_latest(run)["step"] == 12


def test_a_second_writer_of_a_run_folder_is_refused(shard_dir, tmp_path):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.max_steps=4")
    run = train(cfg)
    before = read_metrics(run)
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_holder(run, pid=holder.pid)
        with pytest.raises(OutputLocked, match=f"pid {holder.pid}"):
            train(tiny_config(shard_dir, tmp_path / "run", "train.max_steps=8"), resume=True)
    finally:
        holder.kill()
        holder.wait()
    assert read_metrics(run) == before


def test_a_non_finite_loss_names_the_object_not_its_batch(tmp_path):
    from astropt.data.loader import split_indices

    rng = np.random.default_rng(0)
    ids = [f"obj{i:04d}" for i in range(24)]
    bad = ids[int(split_indices(ids, "train", 0.05)[7])]
    records = [{"id": i, "image": rng.normal(size=(2, 16, 16)).astype(np.float32), "labels": {"width": 1.0}}
               for i in ids]
    image = next(r for r in records if r["id"] == bad)["image"]
    image[:] = np.float32(3e38)  # finite values whose patch mean overflows float32
    image[0, 0, 0] = np.float32(-3e38)
    arrays = {"image": ArraySpec([2, 16, 16])}
    finalize(tmp_path / "data", [write_shard(tmp_path / "data", 0, records, arrays)], arrays, {"width": "float64"})
    cfg = tiny_config(tmp_path / "data", tmp_path / "run", "data.val_fraction=0.05", "data.batch_size=8",
                      "train.max_steps=6", "train.eval_interval=0")
    with pytest.raises(TrainingError) as info:
        train(cfg)
    message = str(info.value)
    assert bad in message
    assert [i for i in ids if i != bad and i in message] == []


def test_a_full_disk_names_the_file_and_keeps_the_last_checkpoint(shard_dir, tmp_path, monkeypatch):
    cfg = tiny_config(shard_dir, tmp_path / "run")
    real = atomic.os.fsync
    calls = []

    def fills_up(fd):
        calls.append(fd)
        if ckpt.list_checkpoints(tmp_path / "run"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fills_up)
    with pytest.raises(DiskFullError, match=r"step-00000008\.pt.*disk is full"):
        train(cfg)
    monkeypatch.undo()
    assert ckpt.load_latest(tmp_path / "run")["step"] == 4
