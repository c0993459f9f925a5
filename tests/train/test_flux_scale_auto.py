"""``flux_scale: auto`` is resolved from the training data and travels with the model."""

from __future__ import annotations

import numpy as np
import yaml
from train_fixtures import make_shards, tiny_config

from astropt.data.shards import Manifest, ShardSet
from astropt.model import load_pretrained
from astropt.tasks.common import used_modalities
from astropt.train.loop import train

AUTO = ["model.modalities.0.flux_features=true", "model.modalities.0.flux_scale=auto", "train.max_steps=2"]


def test_auto_is_saved_as_the_measured_numbers_and_kept_on_other_data(shard_dir, tmp_path):
    run = train(tiny_config(shard_dir, tmp_path / "run", *AUTO))
    noise = Manifest.read(shard_dir).band_stats["image"]["noise"]
    assert len(noise) == 2 and all(0.02 < v < 0.1 for v in noise)  # the fixture's noise is 0.05
    saved = yaml.safe_load((run / "config.yaml").read_text())["model"]["modalities"][0]["flux_scale"]
    model = load_pretrained(run / "final")
    assert saved == model.config.modalities[0].flux_scale == noise
    # Embedding a survey in other units uses the trained unit, not one measured there.
    counts = make_shards(tmp_path / "counts", n=24, seed=1, unit=1e-3)
    np.testing.assert_allclose(Manifest.read(counts).band_stats["image"]["noise"], np.array(noise) * 1000, rtol=0.2)
    assert used_modalities(model, ShardSet(counts))[0].flux_scale == noise
