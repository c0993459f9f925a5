"""Shared pieces of the benchmark workers and driver: shapes, timing, FLOPs, worker I/O.

This module imports only the standard library and torch, because the reference worker
imports it too, from inside the reference's own virtual environment (where our package is
not installed). Both sides therefore time, count and report in exactly the same way.
"""

from __future__ import annotations

import json
import math
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

PATCH = 16
CHANNELS = 3
PATCH_DIM = PATCH * PATCH * CHANNELS  # 768: one 16x16 patch of a 3-band image
BLOCK_SIZE = 1024


@dataclass
class Shape:
    """One benchmarked model + batch: everything both implementations need to build it."""

    name: str
    n_layer: int
    n_head: int
    n_embd: int
    n_tokens: int  # tokens per object
    batch: int
    patch: int = PATCH  # a token is one patch x patch x channels image patch
    channels: int = CHANNELS

    @property
    def patch_dim(self) -> int:
        return self.patch * self.patch * self.channels

    def to_json(self) -> dict:
        return asdict(self)


# The reference model sizes (ARCHITECTURE.md); the tiny CPU config of the quick-start
# (configs/tiny-cpu.yaml: 4 x 96 wide, 64 tokens of 8x8x4 patches, batch 32); "24M" is the
# headline harness shape (6 layers, 8 heads, 512 wide, 256 tokens of 16x16x3, batch 8).
SHAPES = {
    "tiny-cpu": Shape("tiny-cpu", n_layer=4, n_head=4, n_embd=96, n_tokens=64, batch=32, patch=8, channels=4),
    "1M": Shape("1M", n_layer=4, n_head=8, n_embd=128, n_tokens=256, batch=2),
    "5M": Shape("5M", n_layer=6, n_head=8, n_embd=256, n_tokens=256, batch=2),
    "24M": Shape("24M", n_layer=6, n_head=8, n_embd=512, n_tokens=256, batch=8),
    "95M": Shape("95M", n_layer=12, n_head=12, n_embd=768, n_tokens=256, batch=1),
}


def shape_from_json(d: dict) -> Shape:
    return Shape(**d)


# ----------------------------------------------------------------------------- timing


def timed(fn: Callable[[], object], warmup: int, repeats: int, min_time: float = 0.0) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    With ``min_time`` > 0 keeps repeating (up to 4x ``repeats``) until that many seconds
    were measured, so that very short calls are not judged on two samples.
    """
    for _ in range(warmup):
        fn()
    times: list[float] = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < 4 * repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def stats(times: list[float]) -> dict:
    """Median, best and all times of a measurement (seconds)."""
    return {"median_s": float(statistics.median(times)), "min_s": min(times), "times": times}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def load() -> list[float]:
    """1/5/15-minute load averages: how busy the machine was while we measured."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


# ----------------------------------------------------------------------------- FLOPs


def train_flops_per_token(n_params_matmul: int, n_layer: int, n_embd: int, seq: int) -> float:
    """FLOPs of forward+backward per token: 6 N (matmul weights) + 12 L T C (attention).

    ``n_params_matmul`` excludes the position-embedding table (a lookup, not a matmul). The
    attention term counts QK^T and AV, forward and backward, over the full (unmasked)
    sequence, as PaLM (appendix B) and nanoGPT do.
    """
    return 6.0 * n_params_matmul + 12.0 * n_layer * n_embd * seq


def forward_flops_per_token(n_params_matmul: int, n_layer: int, n_embd: int, seq: int) -> float:
    """FLOPs of a forward pass per token (a third of the training count)."""
    return train_flops_per_token(n_params_matmul, n_layer, n_embd, seq) / 3.0


def matmul_peak(
    dtype_name: str, sizes: tuple[int, ...] = (1024, 2048), repeats: int = 6, device: str = "cpu"
) -> dict:
    """Best matmul FLOP/s of this machine for a dtype, over a few square sizes."""
    import torch

    dtype = getattr(torch, dtype_name)
    best = {}
    for n in sizes:
        a = torch.randn(n, n, dtype=dtype, device=device)
        b = torch.randn(n, n, dtype=dtype, device=device)

        def mm(a=a, b=b):
            torch.matmul(a, b)
            if device != "cpu":
                torch.cuda.synchronize()

        times = timed(mm, warmup=2, repeats=repeats)
        best[n] = 2.0 * n**3 / min(times)
    return {"flops": max(best.values()), "by_size": {str(k): v for k, v in best.items()}}


# ----------------------------------------------------------------------------- worker I/O


def worker_main(handlers: dict[str, Callable[[dict], dict]]) -> None:
    """Entry point of a worker: ``python worker.py '<json spec>'`` -> one JSON line on stdout.

    The spec names the benchmark (``bench``); the result is printed as the *last* line, so
    that anything a library prints while building a model is ignored by the driver.
    """
    spec = json.loads(sys.argv[1])
    import torch

    torch.manual_seed(spec.get("seed", 0))
    if spec.get("threads"):
        torch.set_num_threads(int(spec["threads"]))
    result = handlers[spec["bench"]](spec)
    result.update(
        bench=spec["bench"],
        peak_rss_mb=round(peak_rss_mb(), 1),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        load=load(),
    )
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()


def finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
