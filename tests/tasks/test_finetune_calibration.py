"""Finetuned regression heads get uncertainties calibrated on the validation split only and
judged on the test split: coverage, PIT and CRPS in ``finetune.json``, sigma per object in
``predictions.parquet``."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq

from astropt.tasks import finetune as ft
from astropt.tasks.calibration import calibration_metrics
from astropt.tasks.finetune import Targets, calibrate_on_validation, finetune, labelled_splits


def synthetic(n: int, seed: int = 0) -> tuple[Targets, np.ndarray]:
    """Standardised targets of two labels and predictions whose errors grow with |prediction|."""
    rng = np.random.default_rng(seed)
    pred = rng.normal(size=(n, 2))
    values = pred + rng.normal(size=(n, 2)) * (0.1 + 0.3 * np.abs(pred))
    return Targets(["redshift", "size"], values, mean=np.array([0.5, 2.0]), std=np.array([0.2, 1.0])), pred


def test_calibration_never_sees_the_test_truths():
    targets, pred = synthetic(400)
    val, test = np.arange(200), np.arange(200, 400)
    first = calibrate_on_validation(targets, val, pred[val], pred[test])
    targets.values[test] = 1e6  # any test truth: the calibration cannot depend on it
    second = calibrate_on_validation(targets, val, pred[val], pred[test])
    for name in targets.names:
        np.testing.assert_array_equal(first[name].scale, second[name].scale)
        np.testing.assert_array_equal(first[name].shape, second[name].shape)
        np.testing.assert_array_equal(first[name].mu, second[name].mu)


def test_validation_calibration_covers_held_out_objects_at_the_nominal_level():
    targets, pred = synthetic(4000, seed=1)
    val, test = np.arange(2000), np.arange(2000, 4000)
    calibrated = calibrate_on_validation(targets, val, pred[val], pred[test])
    truth = targets.values[test] * targets.std + targets.mean
    for k, name in enumerate(targets.names):
        m = calibration_metrics([(truth[:, k], calibrated[name])])
        assert abs(m["coverage_68"] - 0.68) < 0.05 and abs(m["coverage_95"] - 0.95) < 0.03
        assert m["pit_ks"] < 0.05
    # heteroscedastic: objects with large predicted |value| get wider intervals
    sigma = calibrated["size"].sigma
    wide = np.abs(pred[test, 1]) > 1
    assert np.median(sigma[wide]) > 2 * np.median(sigma[~wide])


def test_finetune_reports_calibration_fitted_on_validation_objects(model_dir, shard_dir, tmp_path, monkeypatch):
    fitted = []
    real = ft.calibrate_residuals

    def spy(resid, x_fit, x_new, mu_new, floor=None):
        fitted.append((len(resid), len(x_fit), len(x_new)))
        return real(resid, x_fit, x_new, mu_new, floor)

    monkeypatch.setattr(ft, "calibrate_residuals", spy)
    res = finetune(model_dir, shard_dir, ["redshift", "size"], out=tmp_path, lora_rank=2, epochs=2,
                   batch_size=8, val_fraction=0.3, progress=False)
    n_val, n_test = res["n_val"], res["n_test"]
    assert n_val >= ft.MIN_CALIBRATION
    assert fitted == [(n_val, n_val, n_test)] * 2  # one per label, fitted on validation objects only
    saved = json.loads((tmp_path / "finetune.json").read_text())
    for name in ("redshift", "size"):
        m = saved["metrics"][name]
        assert 0 <= m["coverage_68"] <= m["coverage_95"] <= 1
        assert 0 <= m["pit_ks"] <= 1 and m["crps"] > 0
        assert sum(m["pit_histogram"]) == n_test
    table = pq.read_table(tmp_path / "predictions.parquet").to_pydict()
    _, _, test = labelled_splits(np.arange(40), 0.2, 0.3, None, 0)
    assert table["id"] == [f"obj{i:04d}" for i in test]
    for name in ("redshift", "size"):
        sigma = np.array(table[f"{name}_sigma"])
        assert len(sigma) == n_test and np.all(np.isfinite(sigma)) and np.all(sigma > 0)
    assert (tmp_path / "finetune_pit.png").stat().st_size > 0  # the calibration figure
