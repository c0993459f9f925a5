"""Finetuning works with every pooling on the shipped single- and multimodal configs.

The head is sized from the features it is given, and those features are the embed task's
``embedding`` column: one features function behind embed, embed_all_layers and heads.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from fake_records import records_for, with_measured_units

from astropt.config import POOLS, load_config
from astropt.data.loader import Collator
from astropt.data.shards import ArraySpec, finalize, write_shard
from astropt.model.astropt import AstroPT
from astropt.model.heads import FinetuneModel, TaskHead, pooled_features
from astropt.tasks.embed import embed_batch
from astropt.tasks.finetune import finetune

CONFIGS = Path(__file__).parents[2] / "configs"
SHRINK = ["model.n_layer=2", "model.n_embd=32", "model.n_head=2"]
NAMES = ["tiny-cpu", "multimodal-tiny"]
HEAD_POOLS = [p for p in POOLS if p != "none"]


def shrunk(name: str):
    config = load_config(CONFIGS / f"{name}.yaml", SHRINK).model
    return with_measured_units(config, records_for(config, 4))


def write_survey(folder: Path, config, n: int) -> Path:
    records = records_for(config, n)
    arrays = {k: ArraySpec(list(v.shape) if k == "image" else [-1])
              for k, v in records[0].items() if k not in ("id", "labels")}
    entry = write_shard(folder, 0, records, arrays)
    finalize(folder, [entry], arrays, {"redshift": "float64"})
    return folder


@pytest.mark.parametrize("pool", HEAD_POOLS)
@pytest.mark.parametrize("name", NAMES)
def test_head_fits_the_features_of_every_pool(name, pool):
    config = shrunk(name)
    torch.manual_seed(0)
    model = AstroPT(config)
    batch, _ = Collator(config)(records_for(config, 3))
    width = model.feature_width(pool, [m.name for m in config.modalities])
    net = FinetuneModel(model, TaskHead(width, 2), pool=pool)
    out = net(batch)
    assert out.shape == (3, 2)
    out.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.head.parameters())
    # The finetuning features are exactly the embed task's `embedding` column.
    with torch.no_grad():
        features = pooled_features(model, batch, pool=pool)
    np.testing.assert_array_equal(features.numpy(), embed_batch(model, batch, pool=pool)["embedding"])


@pytest.mark.parametrize("name", NAMES)
def test_finetune_runs_with_the_config_default_pool(name, tmp_path):
    """The reported crash: ``astropt finetune`` on multimodal-tiny (embed_pool mean_max)."""
    config = shrunk(name)
    data = write_survey(tmp_path / "data", config, 16)
    torch.manual_seed(0)
    res = finetune(AstroPT(config), data, ["redshift"], full=True, epochs=1, batch_size=4, progress=False)
    assert np.isfinite(res["metrics"]["redshift"]["rmse"])


def test_finetune_refuses_unpooled_features(tmp_path):
    config = shrunk("tiny-cpu")
    data = write_survey(tmp_path / "data", config, 12)
    with pytest.raises(ValueError, match="pool"):
        finetune(AstroPT(config), data, ["redshift"], full=True, epochs=1, pool="none", progress=False)
