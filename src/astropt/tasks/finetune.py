"""Finetuning: a task head on the pooled embedding, with LoRA adapters (peft) or all weights.

Objects with labels are split (by a seeded permutation) into train / validation / test.
Regression targets are standardised with the training statistics and fitted jointly (MSE);
one class label is fitted with cross-entropy. Training stops early when the validation loss
has not improved for ``patience`` epochs, and the best weights are kept. The test split gets
the same metrics as ``probe``.

Regression labels also get calibrated uncertainties (:mod:`astropt.tasks.calibration`):
the residuals of the validation objects, which the weights were not fitted to, set the
per-object scale (a ridge model on the predictions and their magnitude: errors may grow
with the predicted value) and the conformal shape; the test objects judge them (coverage at 68/95%, PIT
histogram and KS, CRPS). Validation sets under ``MIN_CALIBRATION`` objects get none.

Saved into ``out``: ``adapter/`` (peft) or ``model/`` (full), ``head.safetensors``,
``finetune.json`` and ``predictions.parquet`` (per test object: truth, prediction and,
for regression, ``<label>_sigma``, the half-width of the 68% interval).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm.auto import tqdm

from astropt.atomic import atomic_path, atomic_write_text
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.locks import writes_to
from astropt.model import AstroPT, save_pretrained
from astropt.model.heads import LORA_TARGETS, FinetuneModel, TaskHead
from astropt.runtime import resolve_device
from astropt.tasks.calibration import Calibrated, calibrate_residuals, calibration_metrics
from astropt.tasks.common import (
    is_redshift,
    label_vector,
    load_model,
    model_batches,
    open_data,
    used_modalities,
)
from astropt.tasks.probe import classification_metrics, is_categorical, regression_metrics

log = logging.getLogger(__name__)

MIN_CALIBRATION = 10  # validation objects needed to calibrate regression uncertainties


@dataclass
class Targets:
    """Training targets: standardised regression values or class indices, and how to undo it."""

    names: list[str]
    values: np.ndarray  # (n, k) float (standardised) or (n,) int class indices
    classes: list[str] | None = None
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    @property
    def classify(self) -> bool:
        return self.classes is not None


def _targets(data: ShardSet, names: list[str]) -> tuple[Targets, np.ndarray]:
    """Label matrix of ``names`` and the indices of objects that have all of them."""
    labels = data.labels(names) if all(n in data.label_names for n in names) else None
    if labels is None:
        missing = [n for n in names if n not in data.label_names]
        raise DataError(f"data {data.directory}: no label(s) {missing}; available: {data.label_names}")
    cols = [label_vector(labels, n, str(data.directory)) for n in names]
    categorical = [is_categorical(c) for c in cols]
    if any(categorical):
        if len(names) != 1:
            raise ValueError(f"finetune one class label at a time, or only regression labels; got {names}")
        classes = sorted(set(cols[0].astype(str).tolist()))
        index = {c: i for i, c in enumerate(classes)}
        values = np.array([index[v] for v in cols[0].astype(str)], dtype=np.int64)
        return Targets(names, values, classes=classes), np.arange(len(values))
    values = np.stack([c.astype(np.float64) for c in cols], axis=1)
    valid = np.nonzero(np.isfinite(values).all(axis=1))[0]
    return Targets(names, values), valid


def labelled_splits(
    valid: np.ndarray, test_fraction: float, val_fraction: float, n_labels: int | None, seed: int,
    val_in_budget: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded train / validation / test split; ``n_labels`` caps the training set.

    With ``val_in_budget``, ``n_labels`` counts the validation labels too: the first
    ``n_labels`` objects after the test set are split ``val_fraction`` / rest into validation
    and training, so a study "with N labels" uses N labels in all. The test set is the same
    for every ``n_labels`` and the labelled sets are nested.
    """
    order = np.random.default_rng(seed).permutation(valid)
    n_test = max(1, int(round(test_fraction * len(order))))
    test, rest = order[:n_test], order[n_test:]
    if val_in_budget and n_labels is not None:
        labelled = rest[:n_labels]
        n_val = max(1, int(round(val_fraction * len(labelled))))
        val, train = labelled[:n_val], labelled[n_val:]
    else:
        n_val = max(1, int(round(val_fraction * len(order))))
        val, train = rest[:n_val], rest[n_val:]
        if n_labels is not None:
            train = train[:n_labels]
    if len(train) < 2:
        raise DataError(f"only {len(train)} training objects with labels; need more data")
    return train, val, test


def _prepare_model(model: AstroPT, lora_rank: int, full: bool, n_out: int, layer: int | None,
                   pool: str | None, names: list[str]) -> FinetuneModel:
    width = model.feature_width(pool, names, layer)  # before peft: a bad pool fails fast
    if full:
        backbone: torch.nn.Module = model
        for p in model.parameters():
            p.requires_grad_(True)
    elif model.llm is not None:
        backbone = model  # an LLM backbone: its own LoRA adapters are what trains
        for name, p in model.named_parameters():
            p.requires_grad_("lora_" in name)
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                "this LLM-backbone model has no LoRA adapters (it was trained with model.llm.lora_r: 0, "
                "a frozen LLM): finetune it with --full, or train it with model.llm.lora_r > 0"
            )
    else:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(r=lora_rank, lora_alpha=2 * lora_rank, lora_dropout=0.0, target_modules=LORA_TARGETS)
        backbone = get_peft_model(model, config)  # freezes the base weights
    return FinetuneModel(backbone, TaskHead(width, n_out), layer, pool)


def _loss(net: FinetuneModel, batch: dict, target: torch.Tensor, classify: bool) -> torch.Tensor:
    out = net(batch)
    return F.cross_entropy(out, target) if classify else F.mse_loss(out, target)


def _run_epoch(net, data, configs, idx, targets, batch_size, device, opt=None) -> float:
    """One pass over ``idx`` (training if ``opt`` is given); returns the mean loss."""
    total, count = 0.0, 0
    for chunk, _, batch in model_batches(data, idx, batch_size, configs, device):
        y = torch.as_tensor(targets.values[chunk], device=device)
        y = y if targets.classify else y.float()
        with torch.set_grad_enabled(opt is not None):
            loss = _loss(net, batch, y, targets.classify)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in net.parameters() if p.requires_grad], 1.0)
            opt.step()
        total += loss.item() * len(chunk)
        count += len(chunk)
    return total / max(count, 1)


def _predict(net, data, configs, idx, batch_size, device) -> np.ndarray:
    outs = []
    with torch.no_grad():
        for _, _, batch in model_batches(data, idx, batch_size, configs, device):
            outs.append(net(batch).float().cpu().numpy())
    return np.concatenate(outs)


def _metrics(targets: Targets, pred: np.ndarray, idx: np.ndarray) -> dict[str, dict[str, float]]:
    if targets.classify:
        classes = np.array(targets.classes)
        return {targets.names[0]: classification_metrics(classes[targets.values[idx]], classes[pred.argmax(1)])}
    y = targets.values[idx] * targets.std + targets.mean
    p = pred * targets.std + targets.mean
    return {n: regression_metrics(y[:, k], p[:, k], is_redshift(n)) for k, n in enumerate(targets.names)}


def _original(targets: Targets, standardised: np.ndarray) -> np.ndarray:
    return standardised * targets.std + targets.mean


def calibrate_on_validation(
    targets: Targets, val: np.ndarray, pred_val: np.ndarray, pred_test: np.ndarray
) -> dict[str, Calibrated]:
    """Calibrated predictive distributions of the test objects per regression label, fitted
    on the validation objects only (their truths and predictions; no test truth is given)."""
    resid = _original(targets, targets.values[val]) - _original(targets, pred_val)
    mu = _original(targets, pred_test)
    f_val, f_test = _spread_features(pred_val), _spread_features(pred_test)
    return {n: calibrate_residuals(resid[:, k], f_val, f_test, mu[:, k]) for k, n in enumerate(targets.names)}


def _spread_features(pred: np.ndarray) -> np.ndarray:
    """Features of the per-object scale: the standardised predictions and their magnitude
    (errors that grow away from the training mean in either direction)."""
    return np.hstack([pred, np.abs(pred)])


def _predictions(ids: list[str], targets: Targets, pred: np.ndarray, test: np.ndarray,
                 calibrated: dict[str, Calibrated]) -> dict[str, list]:
    """Columns of ``predictions.parquet``: id, truth and prediction (and sigma) per label."""
    columns: dict[str, list] = {"id": [ids[i] for i in test]}
    if targets.classify:
        classes = np.array(targets.classes)
        name = targets.names[0]
        columns[name] = classes[targets.values[test]].tolist()
        columns[f"{name}_pred"] = classes[pred.argmax(1)].tolist()
        return columns
    y, p = _original(targets, targets.values[test]), _original(targets, pred)
    for k, name in enumerate(targets.names):
        columns[name], columns[f"{name}_pred"] = y[:, k].tolist(), p[:, k].tolist()
        if name in calibrated:
            columns[f"{name}_sigma"] = calibrated[name].sigma.tolist()
    return columns


@writes_to("out")
def finetune(
    model: AstroPT | str | os.PathLike,
    data: ShardSet | str | os.PathLike,
    targets: list[str],
    out: str | os.PathLike | None = None,
    lora_rank: int = 8,
    full: bool = False,
    epochs: int = 20,
    batch_size: int = 32,
    lr: float | None = None,
    patience: int = 3,
    val_fraction: float = 0.15,
    test_fraction: float = 0.2,
    n_labels: int | None = None,
    val_in_budget: bool = False,
    min_steps: int = 0,
    layer: int | None = None,
    pool: str | None = None,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Finetune ``model`` on ``targets`` of ``data``; returns (and saves) the test metrics.

    Args:
        lora_rank: rank of the LoRA adapters (ignored with ``full``).
        full: train every weight instead of adapters.
        lr: learning rate (default 1e-3 for LoRA, 1e-4 for full finetuning).
        n_labels: use at most this many training labels (label-efficiency studies).
        val_in_budget: ``n_labels`` includes the validation labels (see :func:`labelled_splits`).
        min_steps: at least this many optimizer steps: a small training set runs more epochs
            (and a proportionally longer ``patience``) than ``epochs``.
    """
    device = resolve_device(device)
    model = load_model(model, device)
    data = open_data(data) if not isinstance(data, ShardSet) else data
    configs = used_modalities(model, data)
    tgt, valid = _targets(data, targets)
    train, val, test = labelled_splits(valid, test_fraction, val_fraction, n_labels, seed, val_in_budget)
    stretch = max(1, math.ceil(min_steps / (epochs * math.ceil(len(train) / batch_size))))
    epochs, patience = epochs * stretch, patience * stretch
    if not tgt.classify:
        tgt.mean, tgt.std = tgt.values[train].mean(0), tgt.values[train].std(0) + 1e-12
        tgt.values = (tgt.values - tgt.mean) / tgt.std
    torch.manual_seed(seed)
    n_out = len(tgt.classes) if tgt.classify else len(targets)
    net = _prepare_model(model, lora_rank, full, n_out, layer, pool, [m.name for m in configs]).to(device)
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr or (1e-4 if full else 1e-3), weight_decay=0.01)
    best, best_state, stale, history = float("inf"), None, 0, []
    rng = np.random.default_rng(seed)
    for epoch in tqdm(range(epochs), disable=not progress, desc="finetune", unit="epoch"):
        net.train()
        train_loss = _run_epoch(net, data, configs, rng.permutation(train), tgt, batch_size, device, opt)
        net.eval()
        val_loss = _run_epoch(net, data, configs, val, tgt, batch_size, device)
        history.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss})
        if val_loss < best - 1e-6:
            best, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in net.named_parameters() if v.requires_grad}
        else:
            stale += 1
            if stale >= patience:
                log.info("early stop at epoch %d (best val loss %.4f)", epoch, best)
                break
    if best_state is not None:
        net.load_state_dict(best_state, strict=False)
    net.eval()
    pred_test = _predict(net, data, configs, test, batch_size, device)
    metrics = _metrics(tgt, pred_test, test)
    calibrated: dict[str, Calibrated] = {}
    if not tgt.classify and len(val) >= MIN_CALIBRATION:
        pred_val = _predict(net, data, configs, val, batch_size, device)
        calibrated = calibrate_on_validation(tgt, val, pred_val, pred_test)
        y_test = _original(tgt, tgt.values[test])
        for k, name in enumerate(targets):
            metrics[name].update(calibration_metrics([(y_test[:, k], calibrated[name])]))
    elif not tgt.classify:
        log.warning("only %d validation objects (under %d): no calibrated uncertainties", len(val), MIN_CALIBRATION)
    result = {
        "targets": targets, "mode": "full" if full else f"lora-r{lora_rank}",
        "n_train": int(len(train)), "n_val": int(len(val)), "n_test": int(len(test)), "epochs_run": len(history),
        "metrics": metrics, "history": history,
        "trainable_parameters": int(sum(p.numel() for p in params)),
        "classes": tgt.classes,
        "target_mean": None if tgt.mean is None else tgt.mean.tolist(),
        "target_std": None if tgt.std is None else tgt.std.tolist(),
    }
    if out is not None:
        _save(net, full, result, Path(out), _predictions(data.ids, tgt, pred_test, test, calibrated))
    return result


def _save(net: FinetuneModel, full: bool, result: dict[str, Any], out: Path, predictions: dict[str, list]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if full:
        save_pretrained(net.astropt, out / "model")
    else:
        net.backbone.save_pretrained(str(out / "adapter"))
    head = {k: v.detach().contiguous().cpu() for k, v in net.head.state_dict().items()}
    with atomic_path(out / "head.safetensors") as tmp:
        save_file(head, str(tmp))
    atomic_write_text(out / "finetune.json", json.dumps(result, indent=2))
    with atomic_path(out / "predictions.parquet") as tmp:
        pq.write_table(pa.table(predictions), str(tmp))
    pits = {t: m["pit_histogram"] for t, m in result["metrics"].items() if "pit_histogram" in m}
    if pits:  # the probe's calibration figure, on the test objects
        from astropt import viz

        viz.pit_histograms(pits, out / "finetune_pit.png", result["metrics"])


def label_efficiency(
    model: AstroPT | str | os.PathLike,
    data: ShardSet | str | os.PathLike,
    targets: list[str],
    out: str | os.PathLike | None = None,
    sizes: tuple[int, ...] = (100, 1000, 10000),
    **kwargs: Any,
) -> dict[int, dict[str, Any]]:
    """Finetune with 100, 1k, 10k ... labels (capped by the data) -> test metrics per size.

    The curve is keyed by the labels used: training labels, plus the validation labels with
    ``val_in_budget`` (a finetune keyword, as are the others of ``kwargs``).
    """
    base = load_model(model, resolve_device(kwargs.get("device", "auto")))
    data = open_data(data) if not isinstance(data, ShardSet) else data
    curve: dict[int, dict[str, Any]] = {}
    for n in sizes:
        res = finetune(copy.deepcopy(base), data, targets, None, n_labels=n, **kwargs)
        used = res["n_train"] + (res["n_val"] if kwargs.get("val_in_budget") else 0)
        curve[used] = res["metrics"]
        if used < n:
            break  # the data has no more labels; larger sizes would repeat this point
    if out is not None:
        _plot_curve(curve, Path(out))
    return curve


def _plot_curve(curve: dict[int, dict[str, Any]], out: Path) -> None:
    from matplotlib.figure import Figure

    from astropt.viz import save_figure

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "label_efficiency.json", json.dumps({str(k): v for k, v in curve.items()}, indent=2))
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot()
    sizes = sorted(curve)
    for name in curve[sizes[0]]:
        key = "r2" if "r2" in curve[sizes[0]][name] else "accuracy"
        ax.plot(sizes, [curve[n][name][key] for n in sizes], marker="o", label=f"{name} ({key})")
    ax.set_xscale("log")
    ax.set_xlabel("number of training labels")
    ax.set_ylabel("test metric")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure(fig, out / "label_efficiency.png")
