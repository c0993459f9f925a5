"""Probe metrics agree with hand computations; errors on missing/constant labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.data.shards import DataError
from astropt.tasks.embed import Embeddings, embed
from astropt.tasks.probe import probe, probe_target, redshift_metrics


def synthetic_embeddings(n=200, d=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    z = np.clip(0.5 + 0.2 * x[:, 0] + 0.05 * rng.normal(size=n), 0.01, None)
    kind = np.where(x[:, 1] > 0.8, "rare", "normal")
    return Embeddings([f"o{i}" for i in range(n)], {"embedding": x},
                      {"redshift": z, "kind": kind, "noise": rng.normal(size=n), "const": np.ones(n)})


def test_redshift_metrics_by_hand():
    z = np.array([0.1, 0.5, 1.0, 2.0])
    zp = np.array([0.12, 0.45, 1.5, 2.0])
    delta = (zp - z) / (1 + z)  # 0.01818, -0.0333, 0.25, 0
    m = redshift_metrics(z, zp)
    assert m["bias"] == pytest.approx(np.median(delta))
    assert m["nmad"] == pytest.approx(1.48 * np.median(np.abs(delta - np.median(delta))))
    assert m["outlier_fraction"] == pytest.approx(0.25)


def test_linear_probe_matches_hand_cross_validation():
    emb = synthetic_embeddings()
    x, z = emb.matrix(), emb.labels["redshift"]
    result, pred = probe_target(x, z, "redshift", model="linear", folds=5, seed=3, uncertainty=False)
    hand = np.empty_like(z)
    for train, test in KFold(5, shuffle=True, random_state=3).split(x):
        est = make_pipeline(StandardScaler(), LinearRegression()).fit(x[train], z[train])
        hand[test] = est.predict(x[test])
    np.testing.assert_allclose(pred, hand, rtol=1e-6)
    r2 = 1 - np.sum((z - hand) ** 2) / np.sum((z - z.mean()) ** 2)
    assert result["r2"] == pytest.approx(r2)
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((z - hand) ** 2)))
    assert result["nmad"] == pytest.approx(redshift_metrics(z, hand)["nmad"])
    assert result["r2"] > 0.8


def test_uncertainties_are_calibrated_and_classes_scored(tmp_path):
    emb = synthetic_embeddings(n=400)
    res = probe(emb, ["redshift", "kind", "noise"], out=tmp_path)
    z = res["targets"]["redshift"]
    assert 0.55 < z["coverage_68"] < 0.8 and 0.88 < z["coverage_95"] <= 1.0
    assert res["targets"]["kind"]["task"] == "classification" and res["targets"]["kind"]["accuracy"] > 0.9
    assert res["targets"]["noise"]["r2"] < 0.1  # no signal, no skill
    saved = json.loads((tmp_path / "probe.json").read_text())
    assert saved["targets"]["redshift"]["r2"] == pytest.approx(z["r2"])
    assert (tmp_path / "probe_scatter.png").stat().st_size > 0


def test_bad_targets_are_named():
    emb = synthetic_embeddings()
    with pytest.raises(DataError, match="'mass'.*available"):
        probe(emb, ["mass"])
    with pytest.raises(DataError, match="'const' is constant"):
        probe(emb, ["const"])


def test_per_layer_probe_writes_curve(model_dir, shard_dir, tmp_path):
    path = embed(model_dir, shard_dir, tmp_path / "a.parquet", layer="all", progress=False)
    res = probe(path, ["size"], layer="all", folds=3, out=tmp_path / "p", uncertainty=False)
    assert len(res["layers"]["size"]) == 2
    assert res["column"] == res["best_layer_column"]
    assert (tmp_path / "p" / "r2_by_layer.png").is_file()


def test_mlp_probe_fits_a_regression_label():
    emb = synthetic_embeddings()
    result, pred = probe_target(emb.matrix(), emb.labels["redshift"], "redshift", model="mlp", folds=3,
                                uncertainty=False)
    assert result["r2"] > 0.2 and np.isfinite(pred).all()  # learns (0.3 measured; ridge 0.9, no signal < 0.1)
