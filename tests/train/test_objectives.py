"""Objectives, precision, optimisation and bad input of the training loop."""

from __future__ import annotations

import math

import pytest
import torch
from train_fixtures import tiny_config

from astropt.config import ConfigError, ModalityConfig, ModelConfig
from astropt.model.astropt import AstroPT
from astropt.train import checkpoint as ckpt
from astropt.train import loop
from astropt.train.logging import read_metrics
from astropt.train.optim import lr_at, param_groups


def test_mae_loss_is_on_masked_tokens_only():
    torch.manual_seed(0)
    image = ModalityConfig(image_size=8, patch_size=2, n_channels=1)
    model = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16, attn="full", modalities=[image]))
    tokens = torch.randn(3, 16, 4)
    batch = {"images": tokens.clone()}
    hide = loop.hide_masks(batch, ["images"], 0.5, [0, 1, 2, 3])
    assert (hide["images"].sum(1) == 8).all()
    # Feed the encoder a fixed input so that the batch tensor acts as the target only.
    model.encoders["images"].register_forward_pre_hook(lambda module, args: (tokens,))
    base = model.loss(batch, "mae", hide=hide)
    changed = tokens.clone()
    changed[~hide["images"]] += 5.0  # unmasked targets
    assert torch.equal(model.loss({"images": changed}, "mae", hide=hide), base)
    changed = tokens.clone()
    changed[hide["images"]] += 5.0  # masked targets
    assert model.loss({"images": changed}, "mae", hide=hide) > base + 1.0


def test_hide_masks_depend_only_on_their_seed():
    batch = {"a": torch.zeros(4, 10, 3)}
    first = loop.hide_masks(batch, ["a"], 0.3, [1, 5, 0, 0])["a"]
    assert torch.equal(first, loop.hide_masks(batch, ["a"], 0.3, [1, 5, 0, 0])["a"])
    assert not torch.equal(first, loop.hide_masks(batch, ["a"], 0.3, [1, 6, 0, 0])["a"])
    assert (first.sum(1) == 3).all()


def test_lr_schedule_and_weight_decay_groups(shard_dir, tmp_path):
    t = tiny_config(shard_dir, tmp_path, "train.max_steps=100", "train.warmup_steps=10").train
    lrs = [lr_at(s, t) for s in range(100)]
    assert lrs[0] == pytest.approx(t.lr / 10) and lrs[9] == pytest.approx(t.lr)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:], strict=False))
    assert lr_at(100, t) == pytest.approx(t.min_lr)
    decayed, plain = param_groups(AstroPT(ModelConfig(n_layer=1, attn="full")), 0.1)
    assert all(p.dim() >= 2 for p in decayed["params"]) and all(p.dim() < 2 for p in plain["params"])
    assert plain["weight_decay"] == 0.0 and len(plain["params"]) > 0


@pytest.mark.parametrize("objective", ["ar", "mae"])
def test_bf16_is_within_3_percent_of_fp32(shard_dir, tmp_path, objective):
    """Both ways of training in bf16 (per-op autocast; bf16 weights cast once per step with
    fp32 master weights) end within 3% of the fp32 validation loss."""
    extra = ["train.max_steps=40", "train.eval_interval=40", "train.ckpt_interval=0", f"train.objective={objective}"]
    if objective == "mae":
        extra += ["model.attn=full", "train.norm_targets=true"]
    val = {}
    for dtype, mode in (("float32", "auto"), ("bfloat16", "autocast"), ("bfloat16", "cast_once")):
        run = loop.train(tiny_config(shard_dir, tmp_path / f"{dtype}-{mode}", f"train.dtype={dtype}",
                                     f"train.mixed_precision={mode}", *extra))
        rows = read_metrics(run)
        val[mode] = rows[-1]["val_loss"]
        assert rows[-1]["loss"] < 0.9 * rows[0]["loss"]  # it learns
    for mode in ("autocast", "cast_once"):
        rel = abs(val[mode] - val["auto"]) / val["auto"]
        print(f"{objective}: val loss fp32 {val['auto']:.5f} bf16 {mode} {val[mode]:.5f} ({rel:.2%})")
        assert rel < 0.03


def test_non_finite_loss_stops_with_step_and_ids(shard_dir, tmp_path, monkeypatch):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.ckpt_interval=2")
    forward = loop.LossModule.forward
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += self.training
        loss = forward(self, *args)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(loop.LossModule, "forward", poisoned)
    with pytest.raises(loop.TrainingError, match=r"step 5, although every token of the batch is finite.*batch objects \['obj\d+'"):
        loop.train(cfg)
    assert ckpt.load_latest(tmp_path / "run")["step"] == 4
    assert all(math.isfinite(r["loss"]) for r in read_metrics(tmp_path / "run"))


def test_config_errors_fail_before_any_work(shard_dir, tmp_path):
    with pytest.raises(ConfigError, match="model.attn='full'"):  # when the config is read
        tiny_config(shard_dir, tmp_path / "run", "train.objective=mae")
    with pytest.raises(ConfigError, match="block_size"):
        tiny_config(shard_dir, tmp_path / "run", "model.block_size=8")
    with pytest.raises(ConfigError, match="patch_size"):
        tiny_config(shard_dir, tmp_path / "run", "model.modalities.0.patch_size=5")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        tiny_config(shard_dir, tmp_path / "run", "train.learning_rate=0.1")
    assert not (tmp_path / "run").exists()
