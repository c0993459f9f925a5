"""Training checkpoints: when to save, atomic writes, keep-last-K, loading the latest good one.

A checkpoint is one file ``RUN_DIR/checkpoints/step-00001000.pt`` holding everything needed
to continue exactly: model and optimizer state (full, unsharded tensors on the CPU), the
GradScaler, the step, the data loader position of every rank, the RNG states (Python,
NumPy, torch, CUDA) of every rank, and the resolved config. It is written to a temporary
name, fsynced and renamed, so a crash or kill during the write leaves the previous
checkpoint as the latest one; a damaged file is skipped with a warning on load.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astropt.atomic import atomic_path
from astropt.config import TrainConfig

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
FORMAT = "astropt-train-checkpoint"
_NAME = re.compile(r"^step-(\d+)\.pt$")


def scheduled_steps(cfg: TrainConfig) -> set[int]:
    """Steps (counted in completed optimizer steps, 1-based) after which to save.

    ``interval``: every ``ckpt_interval`` steps; ``log``: ``ckpt_count`` steps spaced
    logarithmically (dense early, for studying training dynamics); ``even``: ``ckpt_count``
    evenly spaced; ``manual``: ``ckpt_steps``. The last step is always included.
    """
    n = cfg.max_steps
    if cfg.ckpt_schedule == "interval":
        steps = set(range(cfg.ckpt_interval, n + 1, cfg.ckpt_interval)) if cfg.ckpt_interval > 0 else set()
    elif cfg.ckpt_schedule == "log":
        steps = {int(round(s)) for s in np.logspace(0, np.log10(n), max(1, cfg.ckpt_count))}
    elif cfg.ckpt_schedule == "even":
        steps = {int(round(s)) for s in np.linspace(n / cfg.ckpt_count, n, cfg.ckpt_count)}
    else:
        steps = {s for s in cfg.ckpt_steps if 0 < s <= n}
    return steps | {n}


def rng_state() -> dict[str, Any]:
    """This process's RNG states, as plain tensors/ints (loadable with ``weights_only``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached": cached},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states captured by :func:`rng_state`."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return Path(run_dir) / CKPT_DIR / f"step-{step:08d}.pt"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoint files in a run, oldest first (temp files ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    found = []
    for path in folder.glob("step-*.pt") if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    return sorted(found)


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 0) -> Path:
    """Write ``state`` as the checkpoint of ``step`` atomically, then prune to ``keep_last``.

    ``keep_last=0`` keeps every checkpoint (what the ``log``/``even`` schedules are for).
    Only checkpoints up to ``step`` count: files of later steps are left over from a run
    that was resumed before them because they were unreadable, and must never push a new,
    good checkpoint out.
    """
    path = checkpoint_path(run_dir, step)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "step": step, **state}, tmp)
    if keep_last > 0:
        valid = [p for s, p in list_checkpoints(run_dir) if s <= step]
        for old in valid[:-keep_last]:
            old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint file (tensors only: no code is unpickled)."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds for damaged files
        raise ValueError(f"{path}: unreadable checkpoint ({_reason(exc)})") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{path}: not an AstroPT training checkpoint")
    return state


class CheckpointError(ValueError):
    """A run's checkpoints cannot be resumed from; the message names them."""


def _reason(exc: BaseException) -> str:
    """Why torch could not read a file, without torch's advice to unpickle code."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if "weights_only" in str(exc):
        return "damaged, or not a plain-tensor checkpoint (pickled code is never run)"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def load_latest(run_dir: str | Path, step: int | None = None) -> dict[str, Any] | None:
    """The newest loadable checkpoint of a run (or the one of ``step``); None if there is none.

    A damaged newest file (a disk failure, a copy cut short) is skipped with a warning and
    the one before it is used.

    Raises:
        CheckpointError: the run has checkpoint files but none of them is readable (a
            resume must not silently start again from step 0).
    """
    found = list_checkpoints(run_dir)
    if step is not None:
        found = [(s, p) for s, p in found if s == step]
        if not found:
            raise ValueError(f"{run_dir}: no checkpoint of step {step} (have {[s for s, _ in list_checkpoints(run_dir)]})")
    for _, path in reversed(found):
        try:
            return load_checkpoint(path)
        except ValueError as exc:
            if step is not None:
                raise
            log.warning("%s; trying the previous checkpoint", exc)
    if found:
        names = ", ".join(p.name for _, p in found[-3:])
        raise CheckpointError(
            f"{run_dir}: all {len(found)} checkpoints are unreadable ({names}); nothing to resume "
            "from. Restore them from a backup, or pass --overwrite to start the run again from step 0"
        )
    return None


def remove_stale_temporaries(run_dir: str | Path) -> None:
    """Delete temp files left by a checkpoint write that was killed."""
    folder = Path(run_dir) / CKPT_DIR
    for tmp in folder.glob(".step-*.tmp") if folder.is_dir() else []:
        tmp.unlink(missing_ok=True)
