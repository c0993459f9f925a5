"""Tiny prepared shard folders and run configs for the training tests."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch.multiprocessing as mp

from astropt.config import RunConfig, load_config
from astropt.data.shards import ArraySpec, finalize, write_shard


def make_shards(directory: Path, n: int = 64, size: int = 16, channels: int = 2, per_shard: int = 24, seed: int = 0,
                unit: float = 1.0) -> Path:
    """``n`` smooth blob images (learnable structure) with a label, in several shards; pixel
    values in units of ``unit`` (``unit=1e-3``: the same survey in counts, 1000 per unit)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    records = []
    for i in range(n):
        cx, cy, w = rng.uniform(size * 0.3, size * 0.7, 2).tolist() + [rng.uniform(1.5, 4.0)]
        blob = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * w**2))
        image = np.stack([blob * (1 + 0.5 * c) for c in range(channels)])
        image = image + 0.05 * rng.standard_normal(image.shape)
        records.append({"id": f"obj{i:04d}", "image": (image / unit).astype(np.float32), "labels": {"width": w}})
    arrays = {"image": ArraySpec([channels, size, size])}
    entries = [
        write_shard(directory, k, records[s : s + per_shard], arrays)
        for k, s in enumerate(range(0, n, per_shard))
    ]
    finalize(directory, entries, arrays, {"width": "float64"})
    return directory


def tiny_config(data: Path, out: Path, *overrides: str) -> RunConfig:
    """A model of a few thousand parameters over 16x16 two-band images (16 tokens)."""
    base = [
        f"data.path={data}", "data.synth_n=0", "data.batch_size=4", "data.val_fraction=0.2",
        "model.n_layer=2", "model.n_head=2", "model.n_embd=16", "model.block_size=32",
        "model.modalities.0.image_size=16", "model.modalities.0.patch_size=4",
        "model.modalities.0.n_channels=2", "model.modalities.0.input_size=0",
        "model.modalities.0.patch_order=raster",
        f"train.out_dir={out}", "train.max_steps=8", "train.warmup_steps=2", "train.lr=0.003",
        "train.min_lr=0.0003", "train.dtype=float32", "train.device=cpu", "train.eval_interval=4",
        "train.eval_batches=2", "train.log_interval=1", "train.ckpt_interval=4", "train.keep_last=0",
        "train.peak_tflops=1.0", "train.figures=false",
    ]
    return load_config(None, base + list(overrides))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_worker(rank: int, world: int, port: int, cfg: RunConfig, resume: bool) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world), OMP_NUM_THREADS="1")
    from astropt.train.loop import train

    train(cfg, resume=resume)


def run_ranks(cfg: RunConfig, world: int = 2, resume: bool = False, limit_s: float = 600) -> None:
    """Train ``cfg`` on ``world`` Gloo processes; a rank that hangs (e.g. its peer died under
    load) fails the test after ``limit_s`` instead of blocking the suite."""
    ctx = mp.start_processes(_rank_worker, args=(world, _free_port(), cfg, resume), nprocs=world,
                             start_method="spawn", join=False)
    deadline = time.monotonic() + limit_s
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{world} ranks did not finish within {limit_s:.0f} s")
