"""Where and how a process runs: device, dtype, autocast, rank/world and the process group.

The one place that training and every task ask these questions, so that they get the same
answers:

- :func:`resolve_device`: ``auto`` -> this process's CUDA device when there is one, else the CPU.
- :func:`resolve_dtype`: ``auto`` -> bf16 where the hardware computes it natively (a CUDA GPU
  with bf16; a CPU with AVX512-BF16 or AMX, for models wide enough to gain), else fp32.
  Never fp16: its narrow range (max 65504) overflows activations that bf16 and fp32 hold,
  training in fp16 needs a gradient scaler, and an embedding should be computed at the
  precision the model was trained at. ``float16`` is therefore only used when asked for by name.
- :func:`autocast`: the mixed-precision context of a dtype (a no-op for fp32).
- :func:`setup` / :func:`teardown`: under ``torchrun`` (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``
  in the environment) the process group is initialised with NCCL on GPUs and Gloo on CPUs.
  Both are idempotent: a second ``setup`` reuses the group, and ``teardown`` only destroys a
  group that ``setup`` created, so a task can be called inside a caller's group.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from astropt.config import DTYPE_NAMES

log = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES if name != "auto"}
"""Dtypes by the names configs and the CLI use (besides ``auto``)."""

_owned_group = False  # True when setup() created the process group (teardown destroys it)


# ----------------------------------------------------------------------------- device, dtype


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix instructions (AVX512-BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's CUDA device when there is one, else the CPU.

    A CUDA device without an index becomes ``cuda:<local_rank>`` and is made current.

    Raises:
        ValueError: a CUDA device is asked for on a machine without one.
    """
    if str(name) == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {str(name)!r} asked for but no CUDA device is available; use cpu or auto")
        if device.index is None:
            device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


BF16_CPU_MIN_WIDTH = 96
"""``auto`` on a bf16 CPU picks fp32 for models narrower than this (``n_embd``), the
narrowest width measured. Measured by the ``width`` section of ``benchmarks.run``
(benchmarks/RESULTS.md): since the bf16 GELU and attention-backward kernels of
:mod:`astropt.model.transformer` and :mod:`astropt.model.attention`, bf16 is 1.55x fp32 at 96
wide and 2.5-3.3x from 192 up (before them: 0.66x at 96, 1.21x at 192, so the rule was 192)."""


def resolve_dtype(name: str, device: str | torch.device, width: int | None = None) -> torch.dtype:
    """The compute dtype of ``name`` on ``device`` (see the module docstring for ``auto``).

    ``width``: the model's ``n_embd``, when known; on a CPU ``auto`` keeps models narrower
    than :data:`BF16_CPU_MIN_WIDTH` in fp32.
    """
    if name == "auto":
        if torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        narrow = width is not None and width < BF16_CPU_MIN_WIDTH
        return torch.bfloat16 if cpu_supports_bf16() and not narrow else torch.float32
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


TCMALLOC = ("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4", "/usr/lib/aarch64-linux-gnu/libtcmalloc_minimal.so.4")
"""Where Debian's ``libtcmalloc-minimal4`` puts tcmalloc."""
_PRELOADED_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")
MALLOC_MMAP_BYTES = 32 << 20
"""``auto`` allocator tuning: blocks up to this size come from the heap and are reused; larger
ones are mapped and returned to the kernel as before. 32 MiB is the most glibc allows."""
MALLOC_TRIM_BYTES = 1 << 30
"""``auto`` allocator tuning: free memory at the top of the heap is returned to the kernel only
past this much (glibc's default: 128 KiB)."""
MALLOC_TOP_PAD_BYTES = 64 << 20
"""``auto`` allocator tuning: extra memory asked of the kernel each time the heap grows."""
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3  # glibc's mallopt parameters (malloc.h)
_tuned: str | None = None


def _preloaded_allocator() -> bool:
    return any(name in os.environ.get("LD_PRELOAD", "") for name in _PRELOADED_ALLOCATORS)


def tune_cpu_allocator(mode: str = "auto") -> str | None:
    """Keep the memory of a CPU step for the next one: what was done (logged on rank 0), or None.

    A training step frees its activations and asks for the same sizes again on the next
    step. glibc's allocator serves blocks past its mmap threshold (128 KiB, rising with use
    up to 32 MiB) with ``mmap`` and returns them, and any free top of the heap, to the
    kernel at once, so every step faults its activation pages in again, zeroed. ``auto``
    (glibc only, nothing preloaded, no ``MALLOC_*`` or ``GLIBC_TUNABLES`` setting of the
    user's) serves every block up to :data:`MALLOC_MMAP_BYTES` from the heap and trims the
    heap only past :data:`MALLOC_TRIM_BYTES` (``mallopt``).

    Measured with the 24M bf16 model (benchmarks/RESULTS.md): training steps 1.10x,
    embedding 1.2-1.8x (and steadier), at the same peak memory. Serving every block from the
    heap (no mmap at all) was as fast there and 1.29x on the astropt-20m config, whose
    blocks are larger, but raised its peak memory from 5.0 to 6.8 GB; preloading tcmalloc
    was 1.57x there at 5.3 GB (:func:`allocator_hint`). ``system`` leaves the allocator as
    it is. Process-wide and done once.
    """
    global _tuned
    if mode == "system" or _tuned is not None:
        return None
    if _preloaded_allocator() or "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return None
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: mallopt's parameters are glibc's
    except (OSError, AttributeError):
        return None
    done = (libc.mallopt(_M_MMAP_THRESHOLD, MALLOC_MMAP_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, MALLOC_TRIM_BYTES)
            and libc.mallopt(_M_TOP_PAD, MALLOC_TOP_PAD_BYTES))
    if not done:
        return None
    _tuned = (f"CPU run: glibc's allocator keeps freed blocks of up to {MALLOC_MMAP_BYTES >> 20} MiB for reuse "
              f"(train.malloc: system, or any MALLOC_* variable, turns this off)")
    if rank_world()[0] == 0:
        log.info(_tuned)
    return _tuned


def allocator_tuned() -> bool:
    """Whether :func:`tune_cpu_allocator` has tuned this process's allocator."""
    return _tuned is not None


def allocator_hint() -> str | None:
    """How to preload tcmalloc for a CPU run, when it is installed and not preloaded (else None).

    tcmalloc keeps the step's freed buffers of every size, at little more memory, and serves
    them faster than the tuned glibc allocator (:func:`tune_cpu_allocator`): measured
    (benchmarks/RESULTS.md) on the 24M bf16 training step 1.13-1.22x against glibc's
    defaults (1.02-1.05x against the tuning), on the astropt-20m config 1.57x at 5.3 GB
    against 5.0.
    A library cannot switch allocators once the process runs, so it is the user's choice, at
    launch.
    """
    if _preloaded_allocator():
        return None
    path = next((p for p in TCMALLOC if Path(p).exists()), None)
    if path is None:
        return None
    return f"CPU run: launching with LD_PRELOAD={path} (tcmalloc) makes training steps a few per cent faster still"


def autocast(device: str | torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed-precision context for ``dtype`` on ``device`` (a no-op for float32)."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


# ----------------------------------------------------------------------------- ranks


@dataclass
class DistInfo:
    """Where this process sits: its rank, the world size and its device."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device: str | torch.device = "auto") -> DistInfo:
    """Initialise the process group when launched by torchrun; return this process's place.

    Gloo on CPUs, NCCL on GPUs. An existing group (a second call, or the caller's) is reused.
    """
    global _owned_group
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), dev)
    if world_size > 1:
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        _owned_group = True
        log.info("process group: rank %d of %d, backend %s, device %s", rank, world_size, backend, dev)
    return DistInfo(rank, local_rank, world_size, dev)


def teardown() -> None:
    """Destroy the process group if :func:`setup` created it (otherwise nothing)."""
    global _owned_group
    if _owned_group and dist.is_initialized():
        dist.destroy_process_group()
    _owned_group = False


def rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of this process (``(0, 1)`` without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def barrier() -> None:
    """Wait for every rank (nothing without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def mean_across_ranks(value: torch.Tensor) -> torch.Tensor:
    """Average a scalar tensor over ranks (identity in one process)."""
    if dist.is_available() and dist.is_initialized():
        value = value.detach().clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        value /= dist.get_world_size()
    return value


def gather_objects(obj: object) -> list[object]:
    """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out
