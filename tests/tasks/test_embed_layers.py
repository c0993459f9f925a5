"""``model.embed_layers``: the default embedding as several blocks' pooled outputs, concatenated."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tasks_fixtures import tiny_config

from astropt.config import ConfigError
from astropt.data.loader import Collator, rows_to_records
from astropt.data.shards import ShardSet
from astropt.model import AstroPT, load_pretrained
from astropt.model.heads import pooled_features
from astropt.tasks.embed import embed, load_embeddings


def _model(**overrides) -> AstroPT:
    torch.manual_seed(0)
    return AstroPT(tiny_config(n_layer=3, embed_pool="mean_max", **overrides)).eval()


def _batch(shard_dir, model: AstroPT, n: int = 6) -> dict:
    data = ShardSet(shard_dir)
    return Collator(model.config)(rows_to_records(data.get_batch(np.arange(n)), data.label_names))[0]


def test_default_embedding_is_the_blocks_concatenated_in_order(shard_dir):
    model = _model(embed_layers=[2, 0])
    batch = _batch(shard_dir, model)
    got = model.embed(batch)["images"]
    manual = torch.cat([model.embed(batch, layer=2)["images"], model.embed(batch, layer=0)["images"]], -1)
    torch.testing.assert_close(got, manual)
    assert got.shape[1] == model.feature_width(None, ["images"]) == 2 * 2 * model.config.n_embd
    assert model.feature_width(None, ["images"], layer=1) == 2 * model.config.n_embd  # one block asked for
    reverse = torch.cat([model.embed(batch, layer=0)["images"], model.embed(batch, layer=2)["images"]], -1)
    assert not torch.allclose(got, reverse)  # the order of embed_layers is the column order
    torch.testing.assert_close(pooled_features(model, batch), got)  # finetuning heads read the same
    # Empty (the default): the one block embed_layer, as before.
    plain = _model()
    torch.testing.assert_close(plain.embed(batch)["images"], plain.embed(batch, layer=1)["images"])


def test_embed_layers_round_trip_and_embed_task(shard_dir, tmp_path):
    model = _model(embed_layers=[1, 2])
    model.save_pretrained(tmp_path / "m")
    loaded = load_pretrained(tmp_path / "m")
    assert loaded.config.embed_layers == [1, 2]
    emb = load_embeddings(embed(tmp_path / "m", shard_dir, tmp_path / "e.parquet", progress=False))
    assert emb.meta["layer"] == [1, 2]
    batch = _batch(shard_dir, model)
    np.testing.assert_allclose(emb.matrix()[:6], model.embed(batch)["images"].numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layers, match", [([0, 3], "out of range"), ([-1], "out of range"),
                                           ([1, 1], "repeats a block")])
def test_bad_embed_layers_are_config_errors(layers, match):
    with pytest.raises(ConfigError, match=f"model.embed_layers.*{match}"):
        tiny_config(n_layer=3, embed_layers=layers)
