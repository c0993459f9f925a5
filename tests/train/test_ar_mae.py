"""The combined objective ``ar_mae``: AR loss + weight x masked-token loss on the same batch."""

from __future__ import annotations

import pytest
import torch
from train_fixtures import tiny_config

from astropt.config import ConfigError, ModalityConfig, ModelConfig
from astropt.model.astropt import AstroPT
from astropt.train import loop
from astropt.train.logging import read_metrics


def _causal_model(seed: int = 0) -> AstroPT:
    torch.manual_seed(seed)
    image = ModalityConfig(image_size=8, patch_size=2, n_channels=1)
    return AstroPT(ModelConfig(n_layer=2, n_head=2, n_embd=16, block_size=16, attn="causal",
                                 mask_token=True, modalities=[image]))


def _full_twin(model: AstroPT) -> AstroPT:
    """The same weights with ``attn: full``: what the masked branch must compute."""
    import dataclasses

    twin = AstroPT(dataclasses.replace(model.config, attn="full"))
    twin.load_state_dict(model.state_dict())
    return twin


@pytest.mark.parametrize("weight", [1.0, 0.3])
def test_ar_mae_is_ar_plus_weighted_mae_of_the_same_mask(weight):
    model = _causal_model()
    batch = {"images": torch.randn(3, 16, 4)}
    hide = loop.hide_masks(batch, ["images"], 0.5, [0, 1, 2, 3])
    seen = []  # the attention mask each block's attention is called with
    for block in model.blocks:
        block.attn.register_forward_pre_hook(lambda m, args, kwargs: seen.append(kwargs.get("causal")),
                                             with_kwargs=True)
    combined = model.loss(batch, "ar_mae", hide=hide, mae_weight=weight)
    assert seen == [None, None, False, False]  # AR pass (the model's causal mask), then full
    ar = model.loss(batch, "ar")
    mae = _full_twin(model).loss(batch, "mae", hide=hide)  # full attention, same weights
    torch.testing.assert_close(combined, ar + weight * mae, rtol=1e-6, atol=1e-7)


def test_full_attention_override_sees_later_tokens_and_ar_does_not():
    model = _causal_model().eval()
    tokens = torch.randn(2, 16, 4)
    later = tokens.clone()
    later[:, -1] += 3.0  # change only the last token
    with torch.no_grad():
        ar_before, ar_after = model({"images": tokens})[0], model({"images": later})[0]
        full_before = model({"images": tokens}, causal=False)[0]
        full_after = model({"images": later}, causal=False)[0]
    torch.testing.assert_close(ar_before[:, :-1], ar_after[:, :-1])  # causal: earlier untouched
    assert (full_before[:, 0] - full_after[:, 0]).abs().max() > 1e-4  # full: the first token moves
    # The override is per call: the next plain call is causal again.
    with torch.no_grad():
        torch.testing.assert_close(model({"images": tokens})[0], ar_before)


def test_ar_mae_training_lowers_the_loss(shard_dir, tmp_path):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.objective=ar_mae", "train.mae_weight=0.5",
                      "train.max_steps=30", "train.eval_interval=30", "train.ckpt_interval=0")
    rows = read_metrics(loop.train(cfg))
    assert rows[-1]["loss"] < 0.9 * rows[0]["loss"]


def test_masked_loss_needs_a_mask_token():
    torch.manual_seed(0)
    model = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=16,
                                modalities=[ModalityConfig(image_size=8, patch_size=2, n_channels=1)]))
    batch = {"images": torch.randn(2, 16, 4)}
    with pytest.raises(ValueError, match="model.mask_token: true"):
        model.loss(batch, "ar_mae", hide=loop.hide_masks(batch, ["images"], 0.5, [0]))


def test_ar_mae_config_errors(shard_dir, tmp_path):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.objective=ar_mae")
    assert cfg.model.mask_token and cfg.model.attn == "causal"  # set for it; the model stays causal
    for bad in ("0", "-1", "nan", "inf"):
        with pytest.raises(ConfigError, match="train.mae_weight"):
            tiny_config(shard_dir, tmp_path / "run", "train.objective=ar_mae", f"train.mae_weight={bad}")
    with pytest.raises(ConfigError, match="model.attn='causal'"):  # ar_mae keeps the causal model
        tiny_config(shard_dir, tmp_path / "run", "train.objective=ar_mae", "model.attn=full")
    with pytest.raises(ConfigError, match="backbone: native"):
        tiny_config(shard_dir, tmp_path / "run", "train.objective=ar_mae", "model.backbone=llm",
                    "model.modality_tokens=true")
    assert not (tmp_path / "run").exists()
