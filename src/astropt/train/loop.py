"""The training loop: ``train(cfg)`` builds the named components, then ``fit`` runs
``train_step`` / ``eval_step`` with checkpoints, metrics and figures.

One loop for every scale: a single process, DDP or FSDP under ``torchrun``; AR or masked
objective; fp32, bf16 or fp16 (with a GradScaler, CUDA only). Resuming restores model,
optimizer, scaler, step, data position and RNG states, so the resumed losses are those of an
uninterrupted run (bitwise in fp32 on the CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict
from torch.nn.parallel import DistributedDataParallel
from tqdm.auto import tqdm

from astropt.config import RunConfig, save_config, to_dict
from astropt.data.loader import Collator, ResumableLoader, ShardDataset, to_device
from astropt.data.noise import resolve_flux_scales
from astropt.data.shards import MANIFEST, Manifest
from astropt.errors import ConfigError, DataError, TrainingError
from astropt.locks import output_lock
from astropt.model.astropt import AstroPT
from astropt.model.attention import resolve_attention_kernel, set_attention_kernel
from astropt.runtime import allocator_hint, autocast, resolve_dtype, tune_cpu_allocator
from astropt.train import checkpoint as ckpt
from astropt.train import distributed as dist_utils
from astropt.train.export import export_weights
from astropt.train.figures import reconstruction_figure
from astropt.train.logging import (
    MetricsLogger,
    flops_per_token,
    measure_peak_flops,
    truncate_metrics,
)
from astropt.train.optim import build_optimizer, lr_at, set_lr
from astropt.train.precision import ComputeCopy, resolve_mixed_precision
from astropt.train.state import restore, save

log = logging.getLogger(__name__)

RUN_ENTRIES = ("config.yaml", "checkpoints", "metrics.jsonl", "final", "figures", "tensorboard")


class LossModule(torch.nn.Module):
    """The model's loss as a ``forward``, so that DDP/FSDP/compile hooks see the call."""

    def __init__(self, model: AstroPT):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor], objective: str, hide: dict | None, norm_targets: bool,
                mae_weight: float = 1.0):
        return self.model.loss(batch, objective=objective, hide=hide, norm_targets=norm_targets,
                               mae_weight=mae_weight)


# ----------------------------------------------------------------------------- set-up


def check_config(cfg: RunConfig) -> None:
    """Checks of a valid config against this machine, before any work (the config's own
    cross-section checks ran when it was built)."""
    if cfg.train.dtype == "float16" and not torch.cuda.is_available():
        raise ConfigError("train.dtype=float16 needs a CUDA device; use bfloat16 on the CPU")


def prepare_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to reuse a run folder unless resuming or overwriting (which clears our files)."""
    exists = any((run_dir / name).exists() for name in RUN_ENTRIES)
    if exists and not (resume or overwrite):
        raise FileExistsError(
            f"{run_dir} already holds a training run; pass --resume to continue it or "
            f"--overwrite to start again"
        )
    if overwrite and not resume:
        for name in RUN_ENTRIES:
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


def ensure_data(cfg: RunConfig, info: dist_utils.DistInfo) -> Path:
    """The prepared data folder, synthesised first (by rank 0) if absent and ``synth_n > 0``."""
    path = Path(cfg.data.path)
    if not (path / MANIFEST).is_file():
        if cfg.data.synth_n <= 0:
            raise DataError(f"{path}: no prepared shards ({MANIFEST} missing) and data.synth_n=0")
        if info.is_main:
            from astropt.data.synthetic import synthesize

            image = next((m for m in cfg.model.modalities if m.kind == "image"), None)
            size = image.image_size if image else 64
            bands = "".join(image.bands) if image and image.bands else "griz"[: image.n_channels if image else 4]
            log.info("synthesising %d objects into %s", cfg.data.synth_n, path)
            with output_lock(path):
                synthesize(path, cfg.data.synth_n, seed=cfg.data.synth_seed, image_size=size, bands=bands)
        dist_utils.barrier()
    return path


@dataclass
class Components:
    """Everything a run holds, by name."""

    cfg: RunConfig
    info: dist_utils.DistInfo
    run_dir: Path
    model: AstroPT
    core: LossModule  # what states are read from (FSDP-sharded in place when sharded)
    parallel: torch.nn.Module  # core, DDP-wrapped when distributed
    wrapped: torch.nn.Module  # parallel (or the compute copy's loss), compiled when asked
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    train_loader: ResumableLoader
    val_loader: ResumableLoader
    logger: MetricsLogger
    tokens_per_step: int
    flops_per_step: float
    peak_flops: float
    compute: ComputeCopy | None = None  # the bf16 weights of ``cast_once`` mixed precision


@dataclass
class Engine:
    """The model side of a run: weights, wrappers, optimizer and precision (no data, no files)."""

    model: AstroPT
    core: LossModule
    parallel: torch.nn.Module
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    dtype: torch.dtype
    precision: str  # none | autocast | cast_once | fsdp
    compute: ComputeCopy | None
    attention: str = "sdpa"  # the resolved train.attention


def build_engine(cfg: RunConfig, info: dist_utils.DistInfo) -> Engine:
    """The model (initialised or loaded), its parallel wrapper, precision and optimizer.

    What ``astropt train`` runs, and what ``benchmarks.run`` times for a shipped config.
    """
    t = cfg.train
    if info.device.type == "cpu":
        tune_cpu_allocator(t.malloc)
    torch.manual_seed(t.seed)  # the same initial weights on every rank
    model = AstroPT(cfg.model)
    if t.init_from not in ("scratch", "resume"):
        from astropt.model import load_pretrained
        from astropt.model.io import load_state_strict

        load_state_strict(model, load_pretrained(t.init_from).state_dict(), t.init_from)
    model.to(info.device)
    torch.manual_seed(t.seed + 1000 * info.rank)  # per-rank streams (dropout) from here on
    dtype = resolve_dtype(t.dtype, info.device, cfg.model.n_embd)
    attention = resolve_attention_kernel(t.attention, dtype, info.device, t.compile)
    set_attention_kernel(model, attention)  # before the compute copy is made: it carries the kernel
    precision = resolve_mixed_precision(t.mixed_precision, dtype, info, t.fsdp)
    core = LossModule(model)
    parallel = dist_utils.parallelize(core, info, fsdp=t.fsdp, find_unused=len(cfg.model.modalities) > 1,
                                      param_dtype=dtype if precision == "fsdp" else None)
    compute = ComputeCopy(core, dtype) if precision == "cast_once" else None
    loss_module = compute.module if compute is not None else parallel
    wrapped = torch.compile(loss_module) if t.compile else loss_module
    optimizer = build_optimizer(parallel, t, info.device)
    scaler = torch.amp.GradScaler(info.device.type, enabled=dtype == torch.float16)
    return Engine(model, core, parallel, wrapped, optimizer, scaler, dtype, precision, compute, attention)


def step_components(cfg: RunConfig, info: dist_utils.DistInfo, e: Engine) -> Components:
    """What :func:`train_step` reads of a run, for an engine alone (no data loaders, logger or
    run folder): timing and testing a step."""
    return Components(cfg=cfg, info=info, run_dir=Path("."), model=e.model, core=e.core, parallel=e.parallel,
                      wrapped=e.wrapped, optimizer=e.optimizer, scaler=e.scaler, dtype=e.dtype, train_loader=None,
                      val_loader=None, logger=None, tokens_per_step=0, flops_per_step=0.0, peak_flops=0.0,
                      compute=e.compute)


def build(cfg: RunConfig, info: dist_utils.DistInfo, run_dir: Path) -> Components:
    """Data, model, wrappers, optimizer and logger of a run."""
    t, d = cfg.train, cfg.data
    data_path = ensure_data(cfg, info)
    collate = Collator(cfg.model)
    train_set = ShardDataset(data_path, cfg.model, "train", d.val_fraction, d.seed, d.augment)
    val_set = ShardDataset(train_set.shards, cfg.model, "val", d.val_fraction, d.seed, False)
    w, r = info.world_size, info.rank
    train_loader = ResumableLoader(train_set, collate, d.batch_size, w, r, d.seed, True, d.num_workers,
                                   pin_memory=info.device.type == "cuda")
    val_batch = max(1, min(d.batch_size, len(val_set) // w))
    val_loader = ResumableLoader(val_set, collate, val_batch, w, r, d.seed, False, 0)

    e = build_engine(cfg, info)
    n_params = e.model.num_params()
    tokens_per_step = d.batch_size * t.grad_accum * w * cfg.model.sequence_length
    peak = t.peak_tflops * 1e12 if t.peak_tflops > 0 else measure_peak_flops(e.dtype, info.device)
    logger = MetricsLogger(run_dir, cfg, enabled=info.is_main)
    hint = allocator_hint() if info.device.type == "cpu" and info.is_main else None
    if hint:
        log.info(hint)
    log.info(
        "model %.2fM parameters; global batch %d x %d x %d = %d tokens/step; dtype %s (%s); attention %s; "
        "peak %.2f TFLOP/s", n_params / 1e6, d.batch_size, t.grad_accum, w, tokens_per_step, e.dtype, e.precision,
        e.attention, peak / 1e12,
    )
    return Components(cfg, info, run_dir, e.model, e.core, e.parallel, e.wrapped, e.optimizer, e.scaler, e.dtype,
                      train_loader, val_loader, logger, tokens_per_step,
                      flops_per_token(cfg.model, n_params) * tokens_per_step, peak * w, e.compute)


# ----------------------------------------------------------------------------- steps


def hide_masks(batch: dict[str, torch.Tensor], names: list[str], ratio: float, seed: list[int]) -> dict:
    """MAE masks: exactly ``round(ratio * n)`` hidden tokens per object and modality.

    Drawn from a generator seeded by ``seed`` (run seed, step, micro-step, rank), so that the
    masks of a step never depend on what ran before it: resuming reproduces them.
    """
    g = torch.Generator().manual_seed(hash(tuple(seed)) & 0x7FFFFFFF)
    hide = {}
    for name in names:
        b, n = batch[name].shape[:2]
        k = max(1, round(ratio * n))
        ranks = torch.rand(b, n, generator=g).argsort(dim=1).argsort(dim=1)
        hide[name] = (ranks < k).to(batch[name].device)
    return hide


@contextlib.contextmanager
def gradient_sync(module: torch.nn.Module, enabled: bool) -> Iterator[None]:
    """Skip the gradient all-reduce on accumulation micro-steps (DDP ``no_sync`` / FSDP)."""
    if isinstance(module, DistributedDataParallel) and not enabled:
        with module.no_sync():
            yield
    else:
        if hasattr(module, "set_requires_gradient_sync"):
            module.set_requires_gradient_sync(enabled)
        yield


def compute_loss(c: Components, batch: dict[str, torch.Tensor], seed: list[int]) -> torch.Tensor:
    t = c.cfg.train
    hide = None
    if t.objective in ("mae", "ar_mae"):
        names = [m.name for m in c.cfg.model.modalities if m.name in batch]
        hide = hide_masks(batch, names, t.mask_ratio, seed)
    with autocast(c.info.device, c.dtype):
        return c.wrapped(batch, t.objective, hide, t.norm_targets, t.mae_weight)


def train_step(c: Components, batches: Iterator, step: int) -> float:
    """One optimizer step over ``grad_accum`` micro-batches; returns the loss (mean over ranks)."""
    t = c.cfg.train
    set_lr(c.optimizer, lr_at(step, t))
    total = torch.zeros((), device=c.info.device)
    seen: list[tuple[list[str], float]] = []
    if c.compute is not None:
        c.compute.pull()
    for micro in range(t.grad_accum):
        batch, ids = next(batches)
        with gradient_sync(c.parallel, micro == t.grad_accum - 1):
            loss = compute_loss(c, to_device(batch, c.info.device), [t.seed, step, micro, c.info.rank])
            c.scaler.scale(loss / t.grad_accum).backward()
        if c.compute is not None:
            c.compute.push_grads()
        total += loss.detach()
        seen.append((ids, loss.detach(), batch))
    mean = dist_utils.mean_across_ranks(total / t.grad_accum).item()
    if not torch.isfinite(torch.tensor(mean)):
        c.optimizer.zero_grad(set_to_none=True)
        raise TrainingError(_nonfinite_message(c, step, mean, seen))
    if t.grad_clip > 0:
        c.scaler.unscale_(c.optimizer)
        torch.nn.utils.clip_grad_norm_(c.parallel.parameters(), t.grad_clip)
    c.scaler.step(c.optimizer)
    c.scaler.update()
    c.optimizer.zero_grad(set_to_none=True)
    return mean


def nonfinite_objects(batch: dict[str, torch.Tensor], ids: list[str]) -> list[str]:
    """Ids of the objects of a batch with a NaN/Inf in any of their tokens."""
    bad = torch.zeros(len(ids), dtype=torch.bool)
    for value in batch.values():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and value.ndim >= 2 and value.shape[0] == len(ids):
            bad |= ~torch.isfinite(value).flatten(1).all(1).cpu()
    return [i for i, b in zip(ids, bad.tolist(), strict=True) if b]


def _nonfinite_message(c: Components, step: int, mean: float, seen: list) -> str:
    """Name the objects behind a non-finite loss (gathered from every rank)."""
    mine = [(nonfinite_objects(batch, ids), ids if not torch.isfinite(value) else []) for ids, value, batch in seen]
    gathered = dist_utils.gather_objects(mine)
    culprits = [i for rank in gathered for bad, _ in rank for i in bad]
    batches = [i for rank in gathered for _, ids in rank for i in ids]
    kept = f"the last good checkpoint is kept in {c.run_dir / ckpt.CKPT_DIR}"
    if culprits:
        return (f"non-finite loss {mean} at step {step + 1}: the tokens of objects {culprits[:32]} are not finite "
                f"(their values overflow float32 when normalised); fix or remove them; {kept}")
    return (f"non-finite loss {mean} at step {step + 1}, although every token of the batch is finite: the "
            f"training diverged (lower train.lr or raise train.warmup_steps); batch objects {batches[:16]}; {kept}")


@torch.no_grad()
def eval_step(c: Components) -> float:
    """Mean loss over the first ``eval_batches`` batches of the validation split (fixed order)."""
    c.wrapped.eval()
    if c.compute is not None:
        c.compute.pull()
    c.val_loader.load_state_dict({"epoch": 0, "position": 0})
    batches = iter(c.val_loader)
    n = min(c.cfg.train.eval_batches, c.val_loader.steps_per_epoch())
    total = torch.zeros((), device=c.info.device)
    for i in range(n):
        batch, _ = next(batches)
        total += compute_loss(c, to_device(batch, c.info.device), [c.cfg.train.seed, -1, i, c.info.rank]).float()
    c.wrapped.train()
    return dist_utils.mean_across_ranks(total / max(n, 1)).item()


# ----------------------------------------------------------------------------- fit


def _figure_records(c: Components, n: int = 4) -> list[dict[str, Any]]:
    dataset = c.val_loader.dataset
    return dataset.__getitems__(list(range(min(n, len(dataset)))))


def fit(c: Components, start: int) -> None:
    """Run steps ``start .. max_steps - 1`` with evaluation, figures and checkpoints."""
    t = c.cfg.train
    save_at = ckpt.scheduled_steps(t)
    batches = iter(c.train_loader)
    bar = tqdm(total=t.max_steps, initial=start, disable=not c.info.is_main, desc="train", dynamic_ncols=True)
    figure_records = _figure_records(c) if (t.figures and c.info.is_main) else []
    c.wrapped.train()
    for step in range(start, t.max_steps):
        tic = time.perf_counter()
        loss = train_step(c, batches, step)
        dt = time.perf_counter() - tic
        done = step + 1
        record: dict[str, Any] = {
            "step": done, "loss": loss, "lr": lr_at(step, t), "epoch": c.train_loader.epoch,
            "tokens_per_s": c.tokens_per_step / dt, "mfu": c.flops_per_step / dt / c.peak_flops,
            "tokens": done * c.tokens_per_step,
        }
        if t.eval_interval > 0 and (done % t.eval_interval == 0 or done == t.max_steps):
            record["val_loss"] = eval_step(c)
            if figure_records:
                reconstruction_figure(c.model, figure_records, t.objective,
                                      c.run_dir / "figures" / f"recon-{done:08d}.png", t.mask_ratio)
        if done % max(1, t.log_interval) == 0 or "val_loss" in record or done == t.max_steps:
            c.logger.log(record)
        bar.update(1)
        bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{record['tokens_per_s']:.0f}", mfu=f"{record['mfu']:.1%}")
        if done in save_at:
            save(c, done)
    bar.close()


def export_final(c: Components) -> Path:
    """Write ``RUN_DIR/final`` (safetensors + config.json) from the full, gathered weights."""
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    model_state, _ = get_state_dict(c.core, c.optimizer, options=options)
    final = c.run_dir / "final"
    if c.info.is_main:
        export_weights(c.cfg.model, model_state, final, {"run_config": to_dict(c.cfg)})
    dist_utils.barrier()
    return final


def train(cfg: RunConfig, resume: bool = False, overwrite: bool = False) -> Path:
    """Train (or continue training) a model; returns the run folder.

    The folder ``cfg.train.out_dir`` receives ``config.yaml``, ``metrics.jsonl``,
    ``checkpoints/``, ``figures/`` and, at the end, ``final/`` (a pretrained folder).
    Launched by ``torchrun`` it trains data-parallel (DDP, or FSDP with ``train.fsdp``).

    Args:
        resume: continue from the latest checkpoint of the run folder (also
            ``train.init_from=resume``).
        overwrite: start again in a folder that holds a run, deleting its files.
    """
    check_config(cfg)
    resume = resume or cfg.train.init_from == "resume"
    info = dist_utils.setup(cfg.train.device)
    run_dir = Path(cfg.train.out_dir)
    # One writer per run folder (the main rank holds the lock for the run).
    with output_lock(run_dir) if info.is_main else contextlib.nullcontext():
        _train(cfg, info, run_dir, resume, overwrite)
    return run_dir


def resolve_data_units(cfg: RunConfig, data_path: Path) -> RunConfig:
    """``cfg`` with ``flux_scale: auto`` replaced by the sky noise measured in ``data_path``'s
    manifest: the numbers are what ``config.yaml`` and the exported model record."""
    model = resolve_flux_scales(cfg.model, Manifest.read(data_path).band_stats, str(data_path))
    return cfg if model is cfg.model else dataclasses.replace(cfg, model=model)


def _train(cfg: RunConfig, info: dist_utils.DistInfo, run_dir: Path, resume: bool, overwrite: bool) -> None:
    try:
        _run(cfg, info, run_dir, resume, overwrite)
    finally:
        # The run's modules are freed while the process group still exists: FSDP state that
        # outlived the group (freed at interpreter exit) aborted a rank at exit.
        gc.collect()
        dist_utils.teardown()


def _run(cfg: RunConfig, info: dist_utils.DistInfo, run_dir: Path, resume: bool, overwrite: bool) -> None:
    cfg = resolve_data_units(cfg, ensure_data(cfg, info))
    if info.is_main:
        prepare_run_dir(run_dir, resume, overwrite)
        save_config(cfg, run_dir / "config.yaml")
    dist_utils.barrier()
    c = build(cfg, info, run_dir)
    start = restore(c) if resume else 0
    if info.is_main:
        truncate_metrics(run_dir, start)
    if start < cfg.train.max_steps:
        fit(c, start)
    export_final(c)
    c.logger.close()
    dist_utils.barrier()  # no rank tears the group down while another still writes
