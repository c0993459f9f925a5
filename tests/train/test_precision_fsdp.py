"""FSDP's mixed-precision policy (bf16 compute weights, fp32 gradients reduced and optimised)
on 2 Gloo ranks follows the single-process bf16 cast-once run."""

from __future__ import annotations

from train_fixtures import run_ranks, tiny_config

from astropt.train.logging import read_metrics
from astropt.train.loop import train


def test_fsdp_bf16_policy_matches_one_process_cast_once(shard_dir, tmp_path):
    common = ["train.max_steps=6", "train.eval_interval=6", "train.ckpt_interval=0", "train.dtype=bfloat16"]
    single = tiny_config(shard_dir, tmp_path / "single", "data.batch_size=4", "train.mixed_precision=cast_once", *common)
    multi = tiny_config(shard_dir, tmp_path / "multi", "data.batch_size=2", "train.fsdp=true", *common)
    train(single)
    run_ranks(multi)
    a, b = read_metrics(tmp_path / "single"), read_metrics(tmp_path / "multi")
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        # Both compute in bf16 from the same fp32 master weights; only the order of the
        # bf16 sums differs (two half batches): within bf16's resolution of a loss.
        assert abs(x["loss"] - y["loss"]) / x["loss"] < 0.02, (x["step"], x["loss"], y["loss"])
    assert b[-1]["loss"] < b[0]["loss"]
