"""Training checkpoints: when to save, atomic writes, keep-last-K, loading the latest good one.

A checkpoint holds everything needed to continue exactly: model and optimizer state, the
GradScaler, the step, the data loader position of every rank, the RNG states (Python,
NumPy, torch, CUDA) of every rank, and the resolved config. It comes in two kinds:

- a file ``RUN_DIR/checkpoints/step-00001000.pt`` (one process and DDP): full, unsharded
  tensors on the CPU, written by rank 0;
- a folder ``RUN_DIR/checkpoints/step-00001000/`` (FSDP): ``torch.distributed.checkpoint``
  (DCP) shards, each rank writing its own (``__R_0.distcp`` + ``.metadata``), beside
  ``extra.pt`` (everything but the model and optimizer tensors, gathered on rank 0). DCP
  reshards on load, so the folder resumes at any world size, or in one process.

Both are written under a temporary name (``.step-*.tmp``) and renamed when complete, so a
crash or kill during the write leaves the previous checkpoint as the latest one; a damaged
one is skipped with a warning on load.
"""

from __future__ import annotations

import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astropt.atomic import atomic_path, disk_full, is_disk_full, publish_folder
from astropt.config import TrainConfig
from astropt.runtime import barrier, rank_world
from astropt.train import sharded as dcp_folder

log = logging.getLogger(__name__)

CKPT_DIR = "checkpoints"
FORMAT = "astropt-train-checkpoint"
EXTRA = "extra.pt"  # in a sharded folder: the state that is not model/optimizer tensors
_NAME = re.compile(r"^step-(\d+)(\.pt)?$")


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


def checkpoint_path(run_dir: str | Path, step: int, sharded: bool = False) -> Path:
    """The file (or, ``sharded``, the folder) of the checkpoint of ``step``."""
    name = f"step-{step:08d}"
    return Path(run_dir) / CKPT_DIR / (name if sharded else f"{name}.pt")


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of the checkpoints (files and sharded folders) of a run, oldest
    first (temporary ones ignored)."""
    folder = Path(run_dir) / CKPT_DIR
    found = []
    for path in folder.glob("step-*") if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match and (path.is_file() if match.group(2) else path.is_dir()):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _prune(run_dir: str | Path, step: int, keep_last: int) -> None:
    """Keep the last ``keep_last`` checkpoints up to ``step`` (0 keeps all). Checkpoints of
    later steps are left over from a run that was resumed before them because they were
    unreadable, and must never push a new, good checkpoint out."""
    if keep_last > 0:
        valid = [p for s, p in list_checkpoints(run_dir) if s <= step]
        for old in valid[:-keep_last]:
            _remove(old)


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], keep_last: int = 0) -> Path:
    """Write ``state`` as the checkpoint file of ``step`` atomically, then prune to ``keep_last``."""
    path = checkpoint_path(run_dir, step)
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "step": step, **state}, tmp)
    _remove(checkpoint_path(run_dir, step, sharded=True))  # a left-over of the same step
    _prune(run_dir, step, keep_last)
    log.info("checkpoint %s", path)
    return path


def save_sharded(
    run_dir: str | Path, step: int, tensors: dict[str, Any], extra: dict[str, Any] | None, keep_last: int = 0
) -> Path:
    """Write the sharded checkpoint folder of ``step``; every rank calls it (a collective).

    Args:
        tensors: this rank's state dicts (DTensor shards under FSDP), e.g.
            ``{"model": ..., "optimizer": ...}``; each rank writes its own shards.
        extra: the rest of the state (step, scaler, every rank's loader and RNG, config),
            written by rank 0 (ignored on the others).
        keep_last: as :func:`save_checkpoint`.
    """
    path = checkpoint_path(run_dir, step, sharded=True)
    tmp = path.with_name(f".{path.name}.tmp")
    main = rank_world()[0] == 0
    if main:
        _remove(tmp)  # a save of the same step killed earlier
        tmp.mkdir(parents=True)
    barrier()
    # When rank 0 returns from the write, every rank's shards and the .metadata are on disk.
    try:
        dcp_folder.write(tmp, tensors)
    except OSError as exc:
        if is_disk_full(exc):
            raise disk_full(path, "the previous checkpoints are kept") from exc
        raise
    if main:
        with atomic_path(tmp / EXTRA) as part:
            torch.save({"format": FORMAT, "step": step, "sharded": True, **(extra or {})}, part)
        checkpoint_path(run_dir, step).unlink(missing_ok=True)  # a left-over of the same step
        publish_folder(tmp, path)
        _prune(run_dir, step, keep_last)
        log.info("checkpoint %s", path)
    barrier()
    return path


def load_shards(path: str | Path, tensors: dict[str, Any]) -> None:
    """Load a sharded folder's tensors into ``tensors`` in place, resharded to this run's
    layout (DTensor shards under FSDP at any world size, full tensors in one process).
    Only the keys of ``tensors`` are read (e.g. just ``{"model": ...}``)."""
    try:
        dcp_folder.read(Path(path), tensors)
    except Exception as exc:  # noqa: BLE001 - DCP wraps every rank's failure in its own kind
        raise CheckpointError(f"{path}: cannot load its shards ({_reason(exc)}); remove this folder to use "
                              "the checkpoint before it") from exc


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read one checkpoint file (tensors only: no code is unpickled).

    For a sharded folder: its ``extra.pt`` plus ``"shards"`` (the folder, to pass to
    :func:`load_shards`), after checking that the shards are complete.
    """
    path = Path(path)
    if path.is_dir():
        dcp_folder.check(path)
        return {**load_checkpoint(path / EXTRA), "shards": str(path)}
    if not path.is_file():
        raise ValueError(f"{path}: missing (a sharded checkpoint without its {EXTRA})")
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
    """Delete temp files and folders left by a checkpoint write that was killed (call it
    on one rank, before any rank saves)."""
    folder = Path(run_dir) / CKPT_DIR
    for tmp in folder.glob(".step-*.tmp") if folder.is_dir() else []:
        _remove(tmp)
