"""Sharded (DCP) checkpoint folders, in one process: atomic folders, keep-last-K, damaged ones."""

from __future__ import annotations

import os
import pickle
import shutil
from fractions import Fraction

import pytest
import torch

from astropt.train import checkpoint as ckpt


def _tensors(seed: int) -> dict[str, dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return {"model": {"w": torch.randn(4, 3, generator=g), "b": torch.randn(3, generator=g)}}


def _save(run, step, keep_last=0):
    return ckpt.save_sharded(run, step, _tensors(step), {"step_note": step}, keep_last=keep_last)


def test_folder_round_trip_and_partial_folder_is_ignored_then_removed(tmp_path):
    run = tmp_path / "run"
    folder = _save(run, 2)
    _save(run, 4)
    assert folder == ckpt.checkpoint_path(run, 2, sharded=True) and folder.is_dir()
    partial = run / ckpt.CKPT_DIR / ".step-00000006.tmp"  # a save killed before its rename
    shutil.copytree(folder, partial)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4]
    state = ckpt.load_latest(run)
    assert state["step"] == 4 and state["step_note"] == 4
    into = {"model": {k: torch.zeros_like(v) for k, v in _tensors(0)["model"].items()}}
    ckpt.load_shards(state["shards"], into)
    for name, value in _tensors(4)["model"].items():
        assert torch.equal(into["model"][name], value)
    ckpt.remove_stale_temporaries(run)
    assert not partial.exists() and folder.is_dir()


def test_keep_last_prunes_folders_and_files_alike(tmp_path):
    run = tmp_path / "run"
    ckpt.save_checkpoint(run, 1, {"model": {}}, keep_last=0)
    for step in (2, 3, 4):
        _save(run, step, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [3, 4]
    assert not ckpt.checkpoint_path(run, 1).exists()
    # A step saved again (a run resumed before it) replaces the old checkpoint, of either kind.
    ckpt.save_sharded(run, 4, _tensors(40), {}, keep_last=2)
    into = {"model": {k: torch.zeros_like(v) for k, v in _tensors(0)["model"].items()}}
    ckpt.load_shards(ckpt.checkpoint_path(run, 4, sharded=True), into)
    assert torch.equal(into["model"]["w"], _tensors(40)["model"]["w"])
    ckpt.save_checkpoint(run, 4, {"model": {}}, keep_last=2)
    assert [p.name for _, p in ckpt.list_checkpoints(run)] == ["step-00000003", "step-00000004.pt"]
    assert not list((run / ckpt.CKPT_DIR).glob(".*"))


def test_damaged_newest_folder_is_skipped_and_all_damaged_is_an_error(tmp_path):
    run = tmp_path / "run"
    _save(run, 2)
    newest = _save(run, 4)
    next(newest.glob("*.distcp")).unlink()  # a shard lost (copy cut short, disk failure)
    assert ckpt.load_latest(run)["step"] == 2
    with pytest.raises(ValueError, match="step-00000004.*missing"):
        ckpt.load_latest(run, step=4)
    (ckpt.checkpoint_path(run, 2, sharded=True) / ".metadata").write_bytes(b"\x00" * 10)
    with pytest.raises(ckpt.CheckpointError, match="unreadable"):
        ckpt.load_latest(run)


class _RunsCode:
    def __reduce__(self):
        return (os.getcwd, ())  # harmless here, but any callable could be named


def test_reading_a_folder_never_runs_code_from_it(tmp_path):
    run = tmp_path / "run"
    folder = _save(run, 2)
    (folder / ".metadata").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(ValueError, match="not part of DCP metadata"):
        ckpt.load_latest(run, step=2)
    # Non-tensor values (optimizer hyperparameters) are read as plain data only.
    other = _save(run, 4)
    ckpt.save_sharded(run, 6, {"model": {"x": Fraction(1, 3)}}, {}, keep_last=0)
    with pytest.raises(ckpt.CheckpointError, match="step-00000006: cannot load"):
        ckpt.load_shards(ckpt.checkpoint_path(run, 6, sharded=True), {"model": {"x": 0}})
    ckpt.load_shards(other, {"model": {"w": torch.zeros(4, 3)}})  # a partial read is fine
