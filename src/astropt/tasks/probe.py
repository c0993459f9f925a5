"""Probes: how much of a physical label can a simple model read off the embeddings?

k-fold cross-validated scikit-learn probes on standardised embeddings. Regression labels get
R² and RMSE (redshift-like labels also the bias, NMAD and outlier fraction of
Δz/(1+z)); class labels get accuracy and macro F1. A Gaussian head (linear mean and log
variance, trained by Gaussian NLL) gives per-object uncertainties, and their calibration is
reported as the coverage of the 68% and 95% intervals. Per-layer probing runs the same probe
on the embedding of every block.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.atomic import atomic_write_text
from astropt.errors import DataError
from astropt.tasks.common import is_redshift, label_vector
from astropt.tasks.embed import Embeddings, load_embeddings

log = logging.getLogger(__name__)

PROBES = ("linear", "ridge", "mlp")
OUTLIER_CUT = 0.15


# ----------------------------------------------------------------------------- metrics


def redshift_metrics(z_true: np.ndarray, z_pred: np.ndarray) -> dict[str, float]:
    """Photo-z metrics of Δ = (z_pred − z_true)/(1 + z_true): bias, NMAD, outlier fraction."""
    delta = (z_pred - z_true) / (1.0 + z_true)
    bias = float(np.median(delta))
    return {
        "bias": bias,
        "nmad": float(1.48 * np.median(np.abs(delta - bias))),
        "outlier_fraction": float(np.mean(np.abs(delta) > OUTLIER_CUT)),
    }


def regression_metrics(y: np.ndarray, pred: np.ndarray, redshift: bool = False) -> dict[str, float]:
    """R² and RMSE (+ the photo-z metrics for redshift-like labels)."""
    out = {"r2": float(r2_score(y, pred)), "rmse": float(np.sqrt(mean_squared_error(y, pred)))}
    if redshift:
        out.update(redshift_metrics(y, pred))
    return out


def classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    return {"accuracy": float(accuracy_score(y, pred)), "f1_macro": float(f1_score(y, pred, average="macro"))}


def is_categorical(values: np.ndarray, max_classes: int = 20) -> bool:
    """Strings, booleans and small sets of integers are classes; everything else is regression."""
    values = np.asarray(values)
    if values.dtype.kind in "OUSb":
        return True
    return values.dtype.kind in "iu" and len(np.unique(values)) <= max_classes


def coverage(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> dict[str, float]:
    """Fraction of true values inside the 68% (±1σ) and 95% (±1.96σ) Gaussian intervals."""
    z = np.abs(y - mu) / sigma
    return {"coverage_68": float(np.mean(z <= 1.0)), "coverage_95": float(np.mean(z <= 1.96))}


# ----------------------------------------------------------------------------- probes


def _estimator(kind: str, classify: bool, seed: int) -> Any:
    if kind not in PROBES:
        raise ValueError(f"unknown probe model {kind!r}; choose from {PROBES}")
    if classify:
        head = (MLPClassifier((256,), max_iter=300, early_stopping=True, random_state=seed)
                if kind == "mlp" else LogisticRegression(max_iter=2000))
    elif kind == "linear":
        head = LinearRegression()
    elif kind == "ridge":
        head = RidgeCV(alphas=np.logspace(-3, 4, 15))
    else:
        head = MLPRegressor((256,), max_iter=300, early_stopping=True, random_state=seed)
    return make_pipeline(StandardScaler(), head)


def gaussian_head(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, steps: int = 300, weight_decay: float = 1e-2
) -> tuple[np.ndarray, np.ndarray]:
    """Linear mean and log-variance heads fitted by Gaussian NLL -> test ``(mu, sigma)``."""
    scaler = StandardScaler().fit(x_train)
    xt = torch.as_tensor(scaler.transform(x_train), dtype=torch.float32)
    xs = torch.as_tensor(scaler.transform(x_test), dtype=torch.float32)
    y_mean, y_std = float(y_train.mean()), float(y_train.std() or 1.0)
    yt = torch.as_tensor((y_train - y_mean) / y_std, dtype=torch.float32)
    torch.manual_seed(0)
    head = torch.nn.Linear(xt.shape[1], 2)
    opt = torch.optim.Adam(head.parameters(), lr=0.05, weight_decay=weight_decay)
    for _ in range(steps):
        out = head(xt)
        loss = torch.nn.functional.gaussian_nll_loss(out[:, 0], yt, out[:, 1].exp().clamp(min=1e-4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = head(xs)
    mu = out[:, 0].numpy() * y_std + y_mean
    sigma = np.sqrt(out[:, 1].exp().clamp(min=1e-4).numpy()) * y_std
    return mu, sigma


def probe_target(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    model: str = "ridge",
    folds: int = 5,
    seed: int = 0,
    uncertainty: bool = True,
) -> tuple[dict[str, Any], np.ndarray]:
    """Cross-validated probe of one label -> (metrics, out-of-fold predictions).

    Metrics are computed on the out-of-fold predictions of all objects together; the
    per-fold spread of the main score is reported as ``*_fold_std``.
    """
    classify = is_categorical(y)
    keep = np.ones(len(y), bool) if classify else np.isfinite(y.astype(np.float64))
    x, y = x[keep], y[keep]
    if classify:
        y = y.astype(str)
        _, counts = np.unique(y, return_counts=True)
        splitter = (StratifiedKFold(folds, shuffle=True, random_state=seed) if counts.min() >= folds
                    else KFold(folds, shuffle=True, random_state=seed))
    else:
        y = y.astype(np.float64)
        splitter = KFold(folds, shuffle=True, random_state=seed)
    if len(y) < folds * 2:
        raise DataError(f"label {name!r}: only {len(y)} objects with a value; too few for {folds}-fold CV")
    pred = np.empty(len(y), dtype=y.dtype)
    mu, sigma = np.zeros(len(y)), np.ones(len(y))
    fold_scores = []
    base = _estimator(model, classify, seed)
    for train, test in splitter.split(x, y):
        est = clone(base).fit(x[train], y[train])
        pred[test] = est.predict(x[test])
        fold_scores.append(accuracy_score(y[test], pred[test]) if classify else r2_score(y[test], pred[test]))
        if uncertainty and not classify:
            mu[test], sigma[test] = gaussian_head(x[train], y[train], x[test])
    if classify:
        result: dict[str, Any] = {"task": "classification", **classification_metrics(y, pred),
                                  "accuracy_fold_std": float(np.std(fold_scores))}
    else:
        result = {"task": "regression", **regression_metrics(y, pred, is_redshift(name)),
                  "r2_fold_std": float(np.std(fold_scores))}
        if uncertainty:
            result.update(coverage(y, mu, sigma))
            result["median_sigma"] = float(np.median(sigma))
    result["n"] = int(len(y))
    full = np.full(len(keep), np.nan if not classify else "", dtype=object if classify else np.float64)
    full[keep] = pred
    return result, full


def default_targets(labels: dict[str, np.ndarray]) -> list[str]:
    """Every label that varies (constant or all-missing labels are skipped)."""
    out = []
    for name in labels:
        try:
            label_vector(labels, name, "")
        except DataError:
            continue
        out.append(name)
    return out


def probe_arrays(
    x: np.ndarray,
    labels: dict[str, np.ndarray],
    targets: list[str],
    model: str = "ridge",
    folds: int = 5,
    seed: int = 0,
    uncertainty: bool = True,
    where: str = "embeddings",
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Probe every target on one feature matrix -> (metrics per target, predictions per target)."""
    results, preds = {}, {}
    for name in targets:
        y = label_vector(labels, name, where)
        results[name], preds[name] = probe_target(x, y, name, model, folds, seed, uncertainty)
        log.info("probe %s: %s", name, {k: round(v, 4) for k, v in results[name].items() if isinstance(v, float)})
    return results, preds


def probe(
    embeddings: Embeddings | str | os.PathLike,
    targets: list[str] | None = None,
    model: str = "ridge",
    layer: str | int | None = None,
    folds: int = 5,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    uncertainty: bool = True,
) -> dict[str, Any]:
    """Probe labels from an embeddings file; write ``probe.json`` and figures into ``out``.

    Args:
        targets: label names (default: every label that varies).
        model: ``linear``, ``ridge`` or ``mlp``.
        layer: ``"all"`` probes every ``embedding_l{k}`` column (needs ``embed --layer all``)
            and plots R² by layer; an int picks one such column; None: the default column.

    Returns:
        ``{"targets": {name: metrics}, "layers": {name: [R² per layer]} (per-layer only)}``.
    """
    emb = embeddings if isinstance(embeddings, Embeddings) else load_embeddings(embeddings)
    where = str(embeddings) if not isinstance(embeddings, Embeddings) else "embeddings"
    targets = targets or default_targets(emb.labels)
    if not targets:
        raise DataError(f"{where}: no label varies; nothing to probe (labels: {sorted(emb.labels)})")
    for name in targets:
        label_vector(emb.labels, name, where)  # fail before any work
    summary: dict[str, Any] = {"model": model, "folds": folds}
    if str(layer) == "all":
        columns = emb.layer_columns
        if not columns:
            raise DataError(f"{where}: no per-layer columns; embed with --layer all first")
        curves: dict[str, list[float]] = {t: [] for t in targets}
        for column in columns:
            res, _ = probe_arrays(emb.matrix(column), emb.labels, targets, model, folds, seed, False, where)
            for t in targets:
                curves[t].append(res[t].get("r2", res[t].get("accuracy")))
        summary["layers"] = curves
        column = columns[int(np.argmax(np.mean([curves[t] for t in targets], axis=0)))]
        summary["best_layer_column"] = column
    else:
        column = f"embedding_l{layer}" if layer is not None else emb.default_column
    results, preds = probe_arrays(emb.matrix(column), emb.labels, targets, model, folds, seed, uncertainty, where)
    summary.update(column=column, targets=results)
    if out is not None:
        write_probe_outputs(summary, emb.labels, preds, out)
    return summary


def write_probe_outputs(
    summary: dict[str, Any], labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], out: str | os.PathLike
) -> None:
    """``probe.json``, ``probe_scatter.png`` and (per-layer) ``r2_by_layer.png`` in ``out``."""
    from astropt import viz

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probe.json", json.dumps(summary, indent=2))
    panels = {t: (labels[t].astype(np.float64), preds[t].astype(np.float64))
              for t, r in summary["targets"].items() if r["task"] == "regression"}
    if panels:
        viz.probe_scatter(panels, out / "probe_scatter.png", summary["targets"])
    if "layers" in summary:
        viz.r2_by_layer(summary["layers"], out / "r2_by_layer.png")
