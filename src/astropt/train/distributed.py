"""Parallel wrappers, applied *to* a single-device model.

The process group itself (and rank, world size, device) is set up by
:mod:`astropt.runtime`, the one place train and every task ask; its helpers are re-exported
here for the training code. :func:`parallelize` wraps the model with DDP, or shards it with
FSDP (``fully_shard``: each transformer block, then the root), and optionally compiles it.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from astropt.runtime import (  # noqa: F401  (re-exported for the training code)
    DistInfo,
    barrier,
    gather_objects,
    mean_across_ranks,
    resolve_device,
    setup,
    teardown,
)

log = logging.getLogger(__name__)


def parallelize(
    model: torch.nn.Module,
    info: DistInfo,
    fsdp: bool = False,
    compile: bool = False,
    find_unused: bool = False,
    param_dtype: torch.dtype | None = None,
) -> torch.nn.Module:
    """Wrap a model (already on ``info.device``) for data-parallel training.

    FSDP shards every module in ``model.model.blocks`` and then the root, in place; DDP
    returns a wrapper sharing the parameters. Returns the module to call for the loss.
    ``param_dtype`` (FSDP only): compute with weights gathered in that dtype, gradients
    reduced and optimised in fp32 (FSDP's ``MixedPrecisionPolicy``).
    """
    if fsdp and not dist.is_initialized():
        log.warning("train.fsdp needs a process group (launch with torchrun); training unsharded")
        fsdp = False
    if fsdp:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32 if param_dtype else None)
        for block in model.model.blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(model, mesh=mesh, mp_policy=policy)
        wrapped = model
    elif info.distributed:
        ids = [info.device.index] if info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids, find_unused_parameters=find_unused)
    else:
        wrapped = model
    if compile:
        wrapped = torch.compile(wrapped)
    return wrapped
