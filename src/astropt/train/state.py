"""A run's training state to and from checkpoints (the formats are in ``checkpoint.py``).

An FSDP-sharded model is saved as a sharded folder (each rank writes its shards); one
process and DDP save one file of full tensors. Either kind resumes a run of any world size:
sharded folders are resharded by DCP, files are loaded whole on every rank. At the same
world size every rank gets its own data position and RNG states back, so the losses continue
exactly; at another world size the data position is re-dealt and the RNG streams reseeded.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict
from torch.distributed.fsdp import FSDPModule

from astropt.config import to_dict
from astropt.errors import ConfigError
from astropt.train import checkpoint as ckpt
from astropt.train import distributed as dist_utils

if TYPE_CHECKING:
    from astropt.train.loop import Components

log = logging.getLogger(__name__)


def is_sharded(c: Components) -> bool:
    """Whether the model is FSDP-sharded (``train.fsdp`` under a process group)."""
    return isinstance(c.core, FSDPModule)


def save(c: Components, step: int) -> None:
    """Checkpoint after ``step`` completed steps: a sharded folder under FSDP, else one file
    of full tensors written by rank 0."""
    ranks = dist_utils.gather_objects({"loader": c.train_loader.state_dict(), "rng": ckpt.rng_state()})
    extra = {"scaler": c.scaler.state_dict(), "ranks": ranks, "world_size": c.info.world_size,
             "config": to_dict(c.cfg)}
    if is_sharded(c):
        model_state, optim_state = get_state_dict(c.core, c.optimizer)
        ckpt.save_sharded(c.run_dir, step, {"model": model_state, "optimizer": optim_state},
                          extra if c.info.is_main else None, c.cfg.train.keep_last)
        return
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, optim_state = get_state_dict(c.core, c.optimizer, options=options)
    if c.info.is_main:
        ckpt.save_checkpoint(c.run_dir, step, {"model": model_state, "optimizer": optim_state, **extra},
                             c.cfg.train.keep_last)
    dist_utils.barrier()


def _load_tensors(c: Components, state: dict[str, Any]) -> None:
    """Model and optimizer from a checkpoint of either kind."""
    if "shards" in state:
        # This run's own layout (DTensor shards under FSDP, full tensors otherwise), filled
        # in place by DCP from however many ranks wrote the folder.
        model_state, optim_state = get_state_dict(c.core, c.optimizer)
        tensors = {"model": model_state, "optimizer": optim_state}
        ckpt.load_shards(state["shards"], tensors)
        set_state_dict(c.core, c.optimizer, model_state_dict=tensors["model"], optim_state_dict=tensors["optimizer"])
    else:
        set_state_dict(c.core, c.optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                       options=StateDictOptions(full_state_dict=True))


def restore(c: Components) -> int:
    """Load the latest good checkpoint into the components; returns its step (0: none)."""
    if c.info.is_main:
        ckpt.remove_stale_temporaries(c.run_dir)
    dist_utils.barrier()
    state = ckpt.load_latest(c.run_dir)
    if state is None:
        log.warning("%s: nothing to resume from; starting at step 0", c.run_dir)
        return 0
    if state["config"]["model"] != to_dict(c.cfg.model):
        raise ConfigError(f"{c.run_dir}: the model config differs from the checkpoint's; cannot resume")
    _load_tensors(c, state)
    c.scaler.load_state_dict(state["scaler"])
    ranks, w = state["ranks"], c.info.world_size
    if len(ranks) == w:
        mine = ranks[c.info.rank]
        c.train_loader.load_state_dict(mine["loader"])
        ckpt.set_rng_state(mine["rng"])
    else:
        # Round-robin dealing: W_old ranks at position p have consumed the first p * W_old
        # objects of the epoch's permutation, which W_new ranks cover at p * W_old / W_new.
        old = ranks[0]["loader"]
        position = old["position"] * len(ranks) // w
        log.warning("resuming %d ranks from %d: data order continues, RNG streams are reseeded", w, len(ranks))
        c.train_loader.load_state_dict({"epoch": old["epoch"], "position": position})
        torch.manual_seed(c.cfg.train.seed + 1000 * c.info.rank + state["step"])
    return int(state["step"])
