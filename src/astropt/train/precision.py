"""Mixed precision by a compute copy: bf16 weights cast once per step, fp32 master weights.

Per-op autocast casts every weight to bf16 in the forward pass and casts every weight
gradient back in the backward pass, each step. :class:`ComputeCopy` does what FSDP's
``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)`` does for a sharded model, for
an unsharded one: the optimizer owns the fp32 master weights (and its fp32 state); a bf16 copy
of the module computes the loss; :meth:`pull` copies the master weights into it once per step
(one fused ``foreach`` cast) and :meth:`push_grads` adds its bf16 gradients into the master
fp32 gradients after each backward pass (so gradient accumulation sums in fp32).

Autocast stays on around the compute copy: its weights are already bf16 (nothing to cast),
and autocast still runs the ops it keeps in fp32 in fp32 and casts the fp32 inputs of a
batch at the first matmul. The loss is computed in fp32 by the model.
"""

from __future__ import annotations

import copy
import logging

import torch

from astropt.config import MixedPrecisionName as MixedPrecision
from astropt.runtime import DistInfo

log = logging.getLogger(__name__)

class ComputeCopy:
    """A low-precision copy of ``model`` whose gradients flow into ``model``'s."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype):
        self.module = copy.deepcopy(model).to(dtype)
        self.dtype = dtype
        self._master = [p for p in model.parameters() if p.requires_grad]
        self._compute = [p for p in self.module.parameters() if p.requires_grad]
        if len(self._master) != len(self._compute):
            raise RuntimeError("the compute copy does not have the model's trainable parameters")

    @torch.no_grad()
    def pull(self) -> None:
        """Copy (and cast) the master weights into the compute copy."""
        torch._foreach_copy_(self._compute, self._master)

    @torch.no_grad()
    def push_grads(self) -> None:
        """Add the compute copy's gradients into the master gradients (fp32) and clear them."""
        for master, compute in zip(self._master, self._compute, strict=True):
            if compute.grad is None:
                continue
            if master.grad is None:
                master.grad = compute.grad.to(master.dtype)
            else:
                master.grad.add_(compute.grad)
            compute.grad = None


def resolve_mixed_precision(mode: MixedPrecision, dtype: torch.dtype, info: DistInfo, fsdp: bool) -> str:
    """How a run of compute dtype ``dtype`` gets its low precision: ``none``, ``autocast``,
    ``cast_once`` (a :class:`ComputeCopy`) or ``fsdp`` (FSDP's own mixed-precision policy).

    ``auto`` is ``cast_once`` on the CPU, where it was measured faster than autocast
    (benchmarks/RESULTS.md), and under FSDP the FSDP policy, which is the same mechanism;
    it stays ``autocast`` on CUDA and under DDP (whose gradient hooks sit on the master
    weights).
    """
    if dtype == torch.float32:
        return "none"
    if fsdp and info.distributed:
        return "fsdp" if mode != "autocast" else "autocast"
    if mode == "cast_once" and info.distributed:
        log.warning("train.mixed_precision=cast_once is not available under DDP; using autocast")
        return "autocast"
    if mode == "auto":
        return "cast_once" if info.device.type == "cpu" and not info.distributed else "autocast"
    return mode
