"""The attention probe: learns which token carries a label, deterministically; token
embeddings round-trip through ``embed --pool none``; pooled input is refused by name."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from astropt.errors import DataError
from astropt.model import load_pretrained
from astropt.tasks.attention_probe import AttentionProbe, AttentionProbeConfig
from astropt.tasks.embed import embed
from astropt.tasks.embeddings import load_embeddings
from astropt.tasks.probe import probe, probe_target

FAST = AttentionProbeConfig(max_epochs=60, patience=10)


def flagged_tokens(n=200, tokens=8, width=6, seed=0):
    """Each object has one flagged token (feature 0 high) whose feature 1 is the label; every
    other token is noise of the same scale, so pooling over tokens dilutes the label."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, tokens, width)).astype(np.float32)
    x[:, :, 0] *= 0.3
    flagged = rng.integers(0, tokens, n)
    y = rng.normal(size=n)
    x[np.arange(n), flagged, 0] = 3.0
    x[np.arange(n), flagged, 1] = y
    return x, y


def test_attention_probe_finds_the_flagged_token_where_mean_pooling_cannot():
    x, y = flagged_tokens()
    attention, _ = probe_target(x, y, "y", model="attention", folds=3, uncertainty=False, attention=FAST)
    ridge, _ = probe_target(x.mean(1), y, "y", model="ridge", folds=3, uncertainty=False)
    assert attention["r2"] > 0.8
    assert attention["r2"] - ridge["r2"] > 0.5


def test_same_seed_same_predictions_and_the_caller_rng_untouched():
    x, y = flagged_tokens(n=80)
    cfg = dataclasses.replace(FAST, max_epochs=5)
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = AttentionProbe(cfg, seed=1).fit(x, y).predict(x)
    assert torch.rand(1) == before  # fit drew from a forked RNG
    b = AttentionProbe(cfg, seed=1).fit(x, y).predict(x)
    c = AttentionProbe(cfg, seed=2).fit(x, y).predict(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_vectors_are_refused_by_the_attention_probe_and_tokens_by_the_others():
    x, y = flagged_tokens(n=40)
    with pytest.raises(DataError, match="attention probe needs token embeddings"):
        probe_target(x.mean(1), y, "y", model="attention")
    with pytest.raises(DataError, match="ridge probe needs one vector per object"):
        probe_target(x, y, "y", model="ridge")
    with pytest.raises(ValueError, match="queries"):
        AttentionProbeConfig(queries=0)


def test_token_embeddings_round_trip_and_pooled_files_are_named(model_dir, shard_dir, tmp_path):
    tokens = embed(model_dir, shard_dir, tmp_path / "tokens.parquet", pool="none", progress=False)
    emb = load_embeddings(tokens)
    model = load_pretrained(model_dir)
    n_tokens = (model.config.modalities[0].image_size // model.config.modalities[0].patch_size) ** 2
    assert emb.tokens().shape == (40, n_tokens, model.config.n_embd)
    assert emb.meta["pool"] == "none"
    with pytest.raises(DataError, match="token embeddings.*--probe attention"):
        emb.matrix()
    pooled = embed(model_dir, shard_dir, tmp_path / "pooled.parquet", pool="mean", progress=False)
    np.testing.assert_allclose(load_embeddings(pooled).matrix(), emb.tokens().mean(1), rtol=1e-4, atol=1e-5)
    with pytest.raises(DataError, match=r"pooled\.parquet.*pooled vectors.*--pool none"):
        probe(pooled, ["size"], model="attention", folds=3)


def test_cli_embeds_tokens_and_probes_them_with_uncertainties(model_dir, shard_dir, tmp_path, capsys):
    from astropt.cli import main

    out = str(tmp_path / "tokens")  # a partitioned folder, as for a survey
    assert main(["embed", str(model_dir), str(shard_dir), "--out", out, "--pool", "none", "--part-size", "16"]) == 0
    assert main(["probe", out, "--probe", "attention", "--target", "size", "--folds", "3", "--attn-max-epochs", "20",
                 "--attn-queries", "2", "--attn-with-pool", "mean", "--out", str(tmp_path / "p")]) == 0
    summary = json.loads((tmp_path / "p" / "probe.json").read_text())
    assert summary["model"] == "attention" and summary["attention"]["queries"] == 2
    assert summary["attention"]["with_pool"] == "mean"
    size = summary["targets"]["size"]
    assert size["n"] == 40 and 0 <= size["coverage_68"] <= size["coverage_95"] <= 1
    assert main(["probe", out, "--target", "size"]) == 2  # ridge on tokens: a message, not a traceback
    assert "--probe attention" in capsys.readouterr().err


def test_cli_options_are_fields_of_the_config():
    from astropt.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    options = {a.dest.removeprefix("attn_") for a in sub.choices["probe"]._actions if a.dest.startswith("attn_")}
    assert "with_pool" in options and options <= {f.name for f in dataclasses.fields(AttentionProbeConfig)}


def test_benchmark_tokens_pool_to_the_default_embedding(model_dir, shard_dir):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from astropt.data.shards import ShardSet
    from astropt.model.astropt import pool_tokens
    from benchmarks import attention_probe, science

    model, data, held = load_pretrained(model_dir), ShardSet(shard_dir), np.arange(0, 40, 3)
    layer = model.config.default_embed_layer
    tokens = attention_probe.token_features(model, data, held, [layer])[layer]
    pooled = pool_tokens(torch.from_numpy(tokens), model.config.embed_pool).numpy()
    np.testing.assert_allclose(pooled, science.default_embeddings(model, data, held), rtol=1e-5, atol=1e-6)
