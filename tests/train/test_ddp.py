"""Data parallelism on CPU (Gloo): 2 ranks == 1 rank with the same global batch."""

from __future__ import annotations

import pytest
from train_fixtures import run_ranks, tiny_config

from astropt.train.logging import read_metrics
from astropt.train.loop import train

RTOL = 1e-5  # float sums in a different order (all-reduce of two half-batch gradients)


def _compare(single_dir, multi_dir) -> float:
    single, multi = read_metrics(single_dir), read_metrics(multi_dir)
    assert [r["step"] for r in single] == [r["step"] for r in multi]
    worst = 0.0
    for a, b in zip(single, multi, strict=True):
        for key in ("loss", "val_loss"):
            if key in a:
                rel = abs(a[key] - b[key]) / abs(a[key])
                assert rel < RTOL, (a["step"], key, a[key], b[key])
                worst = max(worst, rel)
    return worst


@pytest.mark.parametrize("fsdp", [False, True], ids=["ddp", "fsdp"])
def test_two_cpu_ranks_match_one_rank_with_the_same_global_batch(shard_dir, tmp_path, fsdp):
    common = ["train.max_steps=6", "train.grad_accum=2", "train.eval_interval=3", "train.ckpt_interval=3"]
    single = tiny_config(shard_dir, tmp_path / "single", "data.batch_size=4", *common)
    multi = tiny_config(shard_dir, tmp_path / "multi", "data.batch_size=2", f"train.fsdp={str(fsdp).lower()}", *common)
    train(single)
    run_ranks(multi)
    worst = _compare(tmp_path / "single", tmp_path / "multi")
    print(f"{'FSDP' if fsdp else 'DDP'} 2 ranks vs 1: worst relative loss difference {worst:.2e}")
    # The checkpoint of a 2-rank run resumes in one process (positions are re-dealt).
    resumed = tiny_config(shard_dir, tmp_path / "multi", "data.batch_size=4", *common[1:], "train.max_steps=8")
    train(resumed, resume=True)
    assert [r["step"] for r in read_metrics(tmp_path / "multi")][-2:] == [7, 8]
