"""From a run folder to release files: a pretrained folder from a checkpoint, loss curves."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from astropt.config import ModelConfig, from_dict
from astropt.model.astropt import AstroPT
from astropt.model.io import save_pretrained
from astropt.train.checkpoint import load_latest, load_shards
from astropt.train.figures import plot_losses
from astropt.train.logging import read_metrics

log = logging.getLogger(__name__)


def export_weights(
    config: ModelConfig, state: dict[str, torch.Tensor], out: str | Path, extra: dict[str, Any]
) -> Path:
    """A pretrained folder from a training state dict (keys of the loss module, ``model.*``)."""
    model = AstroPT(config)
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return save_pretrained(model, out, extra=extra)


def _model_from_shards(config: ModelConfig, folder: str) -> AstroPT:
    """A model with the weights of a sharded folder, read straight into its parameters."""
    model = AstroPT(config)
    tensors = {"model": {f"model.{k}": v for k, v in model.state_dict().items()}}  # keys as training saves them
    load_shards(folder, tensors)
    model.load_state_dict({k.removeprefix("model."): v for k, v in tensors["model"].items()})
    return model


def export(run_dir: str | Path, out: str | Path, step: int | None = None) -> Path:
    """Write a pretrained folder (``model.safetensors`` + ``config.json``) from a checkpoint.

    A sharded (FSDP) checkpoint folder is gathered into full tensors in this one process,
    whatever the number of ranks that wrote it (its optimizer state is not read).

    Args:
        run_dir: a training run folder.
        out: the folder to write.
        step: which checkpoint (default: the latest loadable one).
    """
    state = load_latest(run_dir, step)
    if state is None:
        raise ValueError(f"{run_dir}: no checkpoint to export")
    config = from_dict(ModelConfig, state["config"]["model"])
    extra = {"run_config": state["config"], "step": state["step"]}
    if "shards" in state:
        save_pretrained(_model_from_shards(config, state["shards"]), out, extra=extra)
    else:
        export_weights(config, state["model"], out, extra)
    log.info("exported step %d of %s to %s", state["step"], run_dir, out)
    return Path(out)


def plot(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Draw the loss curves of a run (``RUN_DIR/losses.png`` by default)."""
    run_dir = Path(run_dir)
    rows = read_metrics(run_dir)
    if not rows:
        raise ValueError(f"{run_dir}: no metrics.jsonl with records; is this a training run folder?")
    return plot_losses(rows, out or run_dir / "losses.png", title=run_dir.name)
