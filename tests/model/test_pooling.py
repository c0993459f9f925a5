"""Pooling of token embeddings: ``mean_max`` (a science-quality lever) against its definition,
padding invariance, and the width the finetuning head must expect."""

import pytest
import torch

from astropt.config import ConfigError, ModalityConfig, ModelConfig, load_config
from astropt.model import AstroPT
from astropt.model.astropt import pool_tokens, pooled_width


def tiny_config(**kw) -> ModelConfig:
    mods = [ModalityConfig(name="images", kind="image", image_size=16, patch_size=4, n_channels=2)]
    return ModelConfig(**(dict(n_layer=2, n_head=2, n_embd=16, block_size=16, modalities=mods) | kw))


def masked_tokens(seed: int, shape: tuple[int, int, int], row: int, n_real: int):
    """Random ``(B, n, C)`` tokens and a mask whose row ``row`` keeps only ``n_real`` tokens."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    mask = torch.ones(shape[:2], dtype=torch.bool)
    mask[row, n_real:] = False
    return x, mask


def test_mean_max_is_mean_and_max_over_real_tokens():
    x, mask = masked_tokens(0, (3, 7, 5), row=1, n_real=4)
    out = pool_tokens(x, "mean_max", mask)
    assert out.shape == (3, 10)
    torch.testing.assert_close(out[1, :5], x[1, :4].mean(0))
    torch.testing.assert_close(out[1, 5:], x[1, :4].amax(0))
    # padding tokens, however large, change nothing
    x2 = x.clone()
    x2[1, 4:] = 1e6
    torch.testing.assert_close(pool_tokens(x2, "mean_max", mask), out)


def test_mean_max_std_adds_the_spread_over_real_tokens_only():
    x, mask = masked_tokens(1, (2, 6, 4), row=0, n_real=3)
    out = pool_tokens(x, "mean_max_std", mask)
    assert out.shape == (2, 12) == (2, pooled_width(4, "mean_max_std"))
    torch.testing.assert_close(out[:, :8], pool_tokens(x, "mean_max", mask))
    torch.testing.assert_close(out[0, 8:], x[0, :3].std(0, unbiased=False))
    torch.testing.assert_close(out[1, 8:], x[1].std(0, unbiased=False))
    x[0, 3:] = -1e6  # padding changes nothing
    torch.testing.assert_close(pool_tokens(x, "mean_max_std", mask), out)


def test_model_default_pool_mean_max_embeds_twice_as_wide():
    torch.manual_seed(0)
    model = AstroPT(tiny_config(embed_pool="mean_max")).eval()
    batch = {"images": torch.randn(2, 16, 32), "images_positions": torch.arange(16).expand(2, -1)}
    emb = model.embed(batch)["images"]
    tokens = model.embed(batch, pool="none")["images"]
    assert emb.shape[-1] == pooled_width(16, "mean_max") == 32
    torch.testing.assert_close(emb, torch.cat([tokens.mean(1), tokens.amax(1)], -1))
    # the legacy default is untouched
    torch.testing.assert_close(model.embed(batch, pool="mean")["images"], tokens.mean(1))


def test_unknown_pool_is_rejected():
    assert load_config(None, ["model.embed_pool=mean_max"]).model.embed_pool == "mean_max"
    with pytest.raises(ConfigError, match="embed_pool"):
        load_config(None, ["model.embed_pool=median"])
    with pytest.raises(ValueError, match="unknown pooling"):
        pool_tokens(torch.zeros(1, 2, 3), "median")
