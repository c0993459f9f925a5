"""Calibrated uncertainties for regression probes and heads: intervals that hold on data
the model was not fitted to.

Method (chosen over a Gaussian head fitted by NLL on the same objects, which learns its own,
too small, residuals): within the objects a probe is trained on,

1. out-of-fold predictions of the probe's own estimator give residuals ``r`` of objects the
   mean model did not see (inner k-fold);
2. a ridge model of ``log r²`` on the features gives a per-object scale ``s(x)``
   (heteroscedastic: faint or small galaxies get wider intervals);
3. the normalised residuals ``z = r / s(x)`` are kept as the shape of the predictive
   distribution, and their quantiles scale the intervals (split-conformal calibration).

A new object's predictive distribution is ``mu + s(x) * z`` over the kept ``z``: the 68% and
95% intervals are its central quantiles, the PIT is its CDF at the truth, and the CRPS is
computed from it, so calibration does not assume Gaussian errors. With exchangeable data
the held-out coverage matches the nominal level up to sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import RidgeCV
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.model.astropt import pool_tokens

LEVELS = (0.68, 0.95)
PIT_BINS = 10
_MAX_SHAPE = 2000  # normalised residuals kept as the predictive shape


@dataclass
class Calibrated:
    """Per-object predictive distributions: ``mu + scale * shape``."""

    mu: np.ndarray  # (n,)
    scale: np.ndarray  # (n,) per-object scale s(x)
    shape: np.ndarray  # (m,) sorted normalised residuals of held-out objects

    def interval(self, level: float) -> tuple[np.ndarray, np.ndarray]:
        """Central ``level`` interval ``(low, high)`` per object."""
        lo, hi = np.quantile(self.shape, [(1 - level) / 2, (1 + level) / 2])
        return self.mu + self.scale * lo, self.mu + self.scale * hi

    @property
    def sigma(self) -> np.ndarray:
        """Half-width of the 68% interval: a 1-sigma equivalent for catalogues."""
        lo, hi = self.interval(0.68)
        return (hi - lo) / 2

    def pit(self, y: np.ndarray) -> np.ndarray:
        """Probability integral transform of the truths ``y`` (uniform when calibrated)."""
        z = (y - self.mu) / self.scale
        return np.searchsorted(self.shape, z, side="right") / len(self.shape)

    def crps(self, y: np.ndarray) -> np.ndarray:
        """Continuous ranked probability score per object (lower is better), exact for the
        empirical predictive distribution: E|X - y| - E|X - X'| / 2."""
        z, m = self.shape, len(self.shape)
        # E|X - X'| of the sorted sample: 2 / m² * sum_i (2i - m - 1) z_i
        spread = 2.0 / m**2 * np.sum((2 * np.arange(1, m + 1) - m - 1) * z)
        t = (y - self.mu) / self.scale
        return self.scale * (np.mean(np.abs(z[None, :] - t[:, None]), axis=1) - spread / 2)


def fit_calibrated(
    make_estimator: Callable[[], Any],
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    mu_test: np.ndarray,
    folds: int = 5,
    seed: int = 0,
) -> Calibrated:
    """Calibrated predictive distributions for ``x_test`` (whose mean predictions are
    ``mu_test``), from held-out residuals of ``make_estimator()`` on the training objects."""
    resid = np.empty(len(y_train))
    for inner_train, inner_test in KFold(folds, shuffle=True, random_state=seed).split(x_train):
        est = clone(make_estimator()).fit(x_train[inner_train], y_train[inner_train])
        resid[inner_test] = y_train[inner_test] - est.predict(x_train[inner_test])
    return calibrate_residuals(resid, x_train, x_test, mu_test, floor=1e-6 * np.var(y_train))


def calibrate_residuals(
    resid: np.ndarray, x_fit: np.ndarray, x_new: np.ndarray, mu_new: np.ndarray, floor: float | None = None
) -> Calibrated:
    """Calibrated predictive distributions for new objects (features ``x_new``, mean
    predictions ``mu_new``) from the residuals ``resid`` of objects (features ``x_fit``) the
    mean model was not fitted to: steps 2 and 3 of the module's method. ``floor`` (default
    ``1e-6`` of the residual variance) keeps ``log r²`` finite."""
    floor = 1e-6 * np.var(resid) if floor is None else floor
    x_fit, x_new = scale_features(x_fit), scale_features(x_new)
    target = np.log(resid**2 + 1e-12 + floor)
    spread = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-1, 5, 13))).fit(x_fit, target)
    scale_fit = np.exp(spread.predict(x_fit) / 2)
    shape = np.sort(resid / scale_fit)
    if len(shape) > _MAX_SHAPE:  # evenly spaced order statistics keep the distribution
        shape = shape[np.linspace(0, len(shape) - 1, _MAX_SHAPE).round().astype(int)]
    return Calibrated(np.asarray(mu_new, float), np.exp(spread.predict(x_new) / 2), shape)


def scale_features(x: np.ndarray) -> np.ndarray:
    """The features of the scale model: vectors as they are; token embeddings
    ``(n, tokens, width)`` (of the attention probe) pooled by ``mean_max_std``."""
    if x.ndim == 2:
        return x
    return pool_tokens(torch.from_numpy(np.ascontiguousarray(x, np.float32)), "mean_max_std").numpy()


def calibration_metrics(folds: list[tuple[np.ndarray, Calibrated]]) -> dict[str, Any]:
    """Held-out calibration over ``(truths, predictive distributions)`` pairs (one per
    outer fold, each judged by the model fitted without it), pooled: coverage at 68/95%,
    the PIT histogram and its KS statistic against uniform, the mean CRPS, the median
    1-sigma-equivalent width."""
    hits = {level: [] for level in LEVELS}
    pits, crps, sigmas = [], [], []
    for y, cal in folds:
        for level in LEVELS:
            lo, hi = cal.interval(level)
            hits[level].append((y >= lo) & (y <= hi))
        pits.append(cal.pit(y))
        crps.append(cal.crps(y))
        sigmas.append(cal.sigma)
    out: dict[str, Any] = {f"coverage_{round(level * 100)}": float(np.mean(np.concatenate(h)))
                           for level, h in hits.items()}
    pit = np.sort(np.concatenate(pits))
    n = len(pit)
    out["pit_histogram"] = np.histogram(pit, bins=PIT_BINS, range=(0, 1))[0].tolist()
    out["pit_ks"] = float(max(np.max(np.arange(1, n + 1) / n - pit), np.max(pit - np.arange(n) / n)))
    out["crps"] = float(np.mean(np.concatenate(crps)))
    out["median_sigma"] = float(np.median(np.concatenate(sigmas)))
    return out
