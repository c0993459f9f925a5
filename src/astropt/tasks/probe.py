"""Probes: how much of a physical label can a simple model read off the embeddings?

k-fold cross-validated scikit-learn probes on standardised embeddings. Regression labels get
R² and RMSE (redshift-like labels also the bias, NMAD and outlier fraction of
Δz/(1+z)); class labels get accuracy and macro F1. Per-object uncertainties come from
:mod:`astropt.tasks.calibration` (held-out residuals, heteroscedastic scale, conformal
quantiles), and their calibration is reported on the objects of each outer fold, which
neither the mean nor the uncertainty model saw: coverage of the 68% and 95% intervals, the PIT
histogram and its KS statistic, and the CRPS. Per-layer probing runs the same probe on the
embedding of every block.

The ``attention`` probe (:mod:`astropt.tasks.attention_probe`) reads token embeddings
(``embed --pool none``) instead of pooled vectors: its pooling is learned with the label, in
the same fold loop, with the same metrics and uncertainties.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.linear_model import LinearRegression, LogisticRegression, RidgeCV
from sklearn.metrics import accuracy_score, f1_score, mean_squared_error, r2_score
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.neural_network import MLPClassifier, MLPRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.atomic import atomic_write_text
from astropt.config import PROBES
from astropt.data.schema import value_type
from astropt.errors import DataError
from astropt.tasks.attention_probe import AttentionProbe, AttentionProbeConfig
from astropt.tasks.calibration import calibration_metrics, fit_calibrated
from astropt.tasks.common import is_redshift, label_vector
from astropt.tasks.embeddings import (
    Embeddings,
    default_column,
    embedding_files,
    label_columns,
    load_embeddings,
    vector_columns,
)

log = logging.getLogger(__name__)

TOKEN_PROBES = ("attention",)  # probes of token embeddings (n, tokens, width), not vectors
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


def _refuse_numbers_as_text(y: np.ndarray, name: str) -> None:
    """A text label whose values are mostly numbers is a numeric label with bad cells (from a
    folder prepared before label types were inferred by majority), not a set of classes."""
    kinds = [value_type(v) for v in y.tolist() if v not in (None, "")]
    numbers = sum(k in ("int64", "float64") for k in kinds)
    if numbers * 2 > len(kinds) and len(set(y.tolist())) > 20:
        raise DataError(
            f"label {name!r} is stored as text but {numbers} of its {len(kinds)} values are numbers: a numeric "
            "label with bad cells; prepare the data again (bad cells become missing values) to probe it"
        )


# ----------------------------------------------------------------------------- probes


def _estimator(kind: str, classify: bool, seed: int, attention: AttentionProbeConfig | None = None) -> Any:
    if kind not in PROBES:
        raise ValueError(f"unknown probe model {kind!r}; choose from {PROBES}")
    if kind == "attention":  # standardises its own (3-D) inputs
        return AttentionProbe(attention or AttentionProbeConfig(), classify, seed)
    if classify:
        head = (MLPClassifier(hidden_layer_sizes=(256,), max_iter=300, early_stopping=True, random_state=seed)
                if kind == "mlp" else LogisticRegression(max_iter=2000))
    elif kind == "linear":
        head = LinearRegression()
    elif kind == "ridge":
        head = RidgeCV(alphas=np.logspace(-3, 4, 15))
    else:
        head = MLPRegressor(hidden_layer_sizes=(256,), max_iter=300, early_stopping=True, random_state=seed)
    return make_pipeline(StandardScaler(), head)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, model: str = "ridge",
                seed: int = 0, attention: AttentionProbeConfig | None = None) -> np.ndarray:
    """Fit the probe ``model`` of one regression label on a training set; predict a test set
    (the train/test counterpart of :func:`probe_target`'s cross-validation)."""
    return _estimator(model, False, seed, attention).fit(x_train, y_train).predict(x_test)


def probe_target(
    x: np.ndarray,
    y: np.ndarray,
    name: str,
    model: str = "ridge",
    folds: int = 5,
    seed: int = 0,
    uncertainty: bool = True,
    attention: AttentionProbeConfig | None = None,
) -> tuple[dict[str, Any], np.ndarray]:
    """Cross-validated probe of one label -> (metrics, out-of-fold predictions).

    ``x``: ``(n, d)`` vectors, or ``(n, tokens, width)`` token embeddings for the
    ``attention`` probe (whose options are ``attention``). Metrics are computed on the
    out-of-fold predictions of all objects together; the per-fold spread of the main score is
    reported as ``*_fold_std``.
    """
    _check_input_shape(x, model, name)
    classify = is_categorical(y)
    if classify and y.dtype.kind in "OUS":
        _refuse_numbers_as_text(y, name)
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
    calibrated = []
    fold_scores = []
    base = _estimator(model, classify, seed, attention)
    for train, test in splitter.split(x, y):
        est = clone(base).fit(x[train], y[train])
        pred[test] = est.predict(x[test])
        fold_scores.append(accuracy_score(y[test], pred[test]) if classify else r2_score(y[test], pred[test]))
        if uncertainty and not classify:
            cal = fit_calibrated(lambda: base, x[train], y[train], x[test], pred[test], folds, seed)
            calibrated.append((y[test], cal))
    if classify:
        result: dict[str, Any] = {"task": "classification", **classification_metrics(y, pred),
                                  "accuracy_fold_std": float(np.std(fold_scores))}
    else:
        result = {"task": "regression", **regression_metrics(y, pred, is_redshift(name)),
                  "r2_fold_std": float(np.std(fold_scores))}
        if uncertainty:
            result.update(calibration_metrics(calibrated))
    result["n"] = int(len(y))
    full = np.full(len(keep), np.nan if not classify else "", dtype=object if classify else np.float64)
    full[keep] = pred
    return result, full


def _check_input_shape(x: np.ndarray, model: str, name: str) -> None:
    tokens = model in TOKEN_PROBES
    if x.ndim != (3 if tokens else 2):
        need = "token embeddings (objects, tokens, width)" if tokens else "one vector per object (objects, width)"
        raise DataError(f"label {name!r}: the {model} probe needs {need}, got an array of shape {x.shape}")


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
    attention: AttentionProbeConfig | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, np.ndarray]]:
    """Probe every target on one feature matrix (token embeddings for the ``attention``
    probe) -> (metrics per target, predictions per target)."""
    results, preds = {}, {}
    for name in targets:
        y = label_vector(labels, name, where)
        results[name], preds[name] = probe_target(x, y, name, model, folds, seed, uncertainty, attention)
        log.info("probe %s: %s", name, {k: round(v, 4) for k, v in results[name].items() if isinstance(v, float)})
    return results, preds


def _read_for_probe(path: str | os.PathLike, layer: str | int | None) -> Embeddings:
    """The labels and the vector column(s) that ``probe`` with ``layer`` uses."""
    if str(layer) == "all":
        return load_embeddings(path)
    schema = embedding_files(path).schema
    column = f"embedding_l{layer}" if layer is not None else default_column(schema)
    if column not in schema.names:
        raise DataError(f"{path}: no column {column!r}; it has {vector_columns(schema)}")
    return load_embeddings(path, columns=[column, *label_columns(schema)])


def probe(
    embeddings: Embeddings | str | os.PathLike,
    targets: list[str] | None = None,
    model: str = "ridge",
    layer: str | int | None = None,
    folds: int = 5,
    out: str | os.PathLike | None = None,
    seed: int = 0,
    uncertainty: bool = True,
    attention: AttentionProbeConfig | None = None,
) -> dict[str, Any]:
    """Probe labels from an embeddings file; write ``probe.json`` and figures into ``out``.

    Args:
        targets: label names (default: every label that varies).
        model: ``linear``, ``ridge``, ``mlp`` (pooled vectors) or ``attention`` (token
            embeddings from ``embed --pool none``; a pooling learned with the label, options
            in ``attention``).
        layer: ``"all"`` probes every ``embedding_l{k}`` column (needs ``embed --layer all``)
            and plots R² by layer; an int picks one such column; None: the default column.

    Returns:
        ``{"targets": {name: metrics}, "layers": {name: [R² per layer]} (per-layer only)}``.

    A probe fits on every object at once (features joined with their labels), so the
    vector column it probes (every per-layer column with ``layer="all"``) and the labels
    are read whole, as float32; other vector columns are not read.
    """
    emb = embeddings if isinstance(embeddings, Embeddings) else _read_for_probe(embeddings, layer)
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
            res, _ = probe_arrays(_features(emb, column, model, where), emb.labels, targets, model, folds, seed,
                                  False, where, attention)
            for t in targets:
                curves[t].append(res[t].get("r2", res[t].get("accuracy")))
        summary["layers"] = curves
        column = columns[int(np.argmax(np.mean([curves[t] for t in targets], axis=0)))]
        summary["best_layer_column"] = column
    else:
        column = f"embedding_l{layer}" if layer is not None else emb.default_column
    results, preds = probe_arrays(_features(emb, column, model, where), emb.labels, targets, model, folds, seed,
                                  uncertainty, where, attention)
    summary.update(column=column, targets=results)
    if model in TOKEN_PROBES:
        summary["attention"] = asdict(attention or AttentionProbeConfig())
    if out is not None:
        write_probe_outputs(summary, emb.labels, preds, out)
    return summary


def _features(emb: Embeddings, column: str, model: str, where: str) -> np.ndarray:
    """The vectors of ``column``, or its token embeddings for a token probe."""
    return emb.tokens(column, where) if model in TOKEN_PROBES else emb.matrix(column)


def write_probe_outputs(
    summary: dict[str, Any], labels: dict[str, np.ndarray], preds: dict[str, np.ndarray], out: str | os.PathLike
) -> None:
    """``probe.json``, ``probe_scatter.png``, ``probe_pit.png`` (calibration) and (per-layer)
    ``r2_by_layer.png`` in ``out``."""
    from astropt import viz

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "probe.json", json.dumps(summary, indent=2))
    panels = {t: (labels[t].astype(np.float64), preds[t].astype(np.float64))
              for t, r in summary["targets"].items() if r["task"] == "regression"}
    if panels:
        viz.probe_scatter(panels, out / "probe_scatter.png", summary["targets"])
    pits = {t: r["pit_histogram"] for t, r in summary["targets"].items() if "pit_histogram" in r}
    if pits:
        viz.pit_histograms(pits, out / "probe_pit.png", summary["targets"])
    if "layers" in summary:
        viz.r2_by_layer(summary["layers"], out / "r2_by_layer.png")
