"""Calibrated probe uncertainties: held-out coverage at the nominal levels where a Gaussian
head fitted on its own training objects is overconfident; exact CRPS; heteroscedastic widths."""

import numpy as np
import pytest
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.tasks.calibration import Calibrated, calibration_metrics, fit_calibrated
from astropt.tasks.probe import probe_target


def heteroscedastic(n=2400, d=120, seed=0):
    """Many features, few useful ones (a probe can overfit), noise growing with x[:, 0]."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    noise_sd = 0.2 + 0.8 / (1 + np.exp(-2 * x[:, 0]))
    y = x[:, :5] @ np.array([1.0, -0.5, 0.3, 0.2, 0.1]) + noise_sd * rng.normal(size=n)
    return x, y, noise_sd


def test_held_out_coverage_is_nominal_and_widths_follow_the_noise():
    x, y, noise_sd = heteroscedastic()
    result, _ = probe_target(x, y, "size", model="ridge", folds=5, seed=1)
    assert abs(result["coverage_68"] - 0.68) <= 0.03
    assert abs(result["coverage_95"] - 0.95) <= 0.03
    assert result["pit_ks"] < 0.05 and sum(result["pit_histogram"]) == len(y)
    # per-object widths track the true noise level (heteroscedastic, not one width for all)
    make = lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))  # noqa: E731
    train, test = next(KFold(5, shuffle=True, random_state=0).split(x))
    mu = make().fit(x[train], y[train]).predict(x[test])
    cal = fit_calibrated(make, x[train], y[train], x[test], mu)
    assert np.corrcoef(cal.sigma, noise_sd[test])[0, 1] > 0.7


def test_in_sample_residuals_would_be_overconfident():
    """Why the held-out residuals: scaling by training residuals under-covers new objects."""
    x, y, _ = heteroscedastic(n=600, d=200)
    train, test = next(KFold(5, shuffle=True, random_state=0).split(x))
    est = make_pipeline(StandardScaler(), RidgeCV(alphas=[1e-3])).fit(x[train], y[train])
    naive = Calibrated(est.predict(x[test]), np.ones(len(test)), np.sort(y[train] - est.predict(x[train])))
    ours = fit_calibrated(lambda: make_pipeline(StandardScaler(), RidgeCV(alphas=[1e-3])),
                          x[train], y[train], x[test], est.predict(x[test]))
    naive_cov = calibration_metrics([(y[test], naive)])["coverage_68"]
    ours_cov = calibration_metrics([(y[test], ours)])["coverage_68"]
    assert naive_cov < 0.5 and abs(ours_cov - 0.68) < 0.08


def test_crps_is_exact_for_the_empirical_distribution():
    rng = np.random.default_rng(2)
    cal = Calibrated(np.array([0.3, -1.0]), np.array([2.0, 0.5]), np.sort(rng.normal(size=50)))
    y = np.array([1.0, -0.7])
    samples = cal.mu[:, None] + cal.scale[:, None] * cal.shape[None, :]
    brute = [np.mean(np.abs(s - t)) - 0.5 * np.mean(np.abs(s[:, None] - s[None, :])) for s, t in zip(samples, y, strict=True)]
    np.testing.assert_allclose(cal.crps(y), brute, rtol=1e-10)
    lo, hi = cal.interval(0.95)
    assert np.all(lo < cal.mu) and np.all(hi > cal.mu)


@pytest.mark.parametrize("level", [0.68, 0.95])
def test_interval_holds_its_level_on_the_shape_itself(level):
    shape = np.sort(np.random.default_rng(3).standard_t(4, size=4000))
    cal = Calibrated(np.zeros(4000), np.ones(4000), shape)
    lo, hi = cal.interval(level)
    assert np.mean((shape >= lo) & (shape <= hi)) == pytest.approx(level, abs=0.002)
