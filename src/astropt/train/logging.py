"""Training metrics: JSONL (always), TensorBoard and wandb (when enabled and installed),
throughput and model-FLOPs-utilisation estimates.

``RUN_DIR/metrics.jsonl`` has one JSON object per logged step: ``{"step", "loss", "lr",
"tokens_per_s", "mfu", "epoch", ...}``, with ``val_loss`` on evaluation steps.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from astropt.atomic import atomic_write_text, disk_full, is_disk_full
from astropt.config import ModelConfig, RunConfig, to_dict

log = logging.getLogger(__name__)

METRICS = "metrics.jsonl"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The records of ``metrics.jsonl`` (a line cut short by a kill is skipped)."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def truncate_metrics(run_dir: str | Path, step: int) -> None:
    """Drop records after ``step`` (written by a run that is being resumed from ``step``)."""
    path = Path(run_dir) / METRICS
    if path.is_file():
        keep = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
        atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in keep))


def flops_per_token(cfg: ModelConfig, n_params: int) -> float:
    """Training FLOPs per token: ``6 N`` for the weights plus the attention scores (PaLM)."""
    return 6.0 * n_params + 12.0 * cfg.n_layer * cfg.n_embd * cfg.sequence_length


def measure_peak_flops(dtype: torch.dtype, device: torch.device, size: int = 1024, reps: int = 10) -> float:
    """FLOP/s of a large matmul in ``dtype`` on ``device``: the ceiling MFU is measured against.

    Measured rather than looked up so that it means something on any CPU; on a shared
    machine it is noisy. ``train.peak_tflops`` overrides it.
    """
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    (a @ b).sum().item()  # warm-up
    best = float("inf")
    for _ in range(reps):  # the fastest repetition: the least disturbed by other work
        start = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / max(best, 1e-9)


class MetricsLogger:
    """Writes metrics to JSONL, and to TensorBoard/wandb when asked (main rank only)."""

    def __init__(self, run_dir: Path, cfg: RunConfig, enabled: bool = True):
        self.path = run_dir / METRICS
        self.enabled = enabled
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        train = cfg.train
        if train.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                log.warning("train.tensorboard is on but tensorboard is not installed: pip install 'astropt[tensorboard]'")
        if train.wandb:
            try:
                import wandb

                self.wandb = wandb.init(project=train.wandb_project, dir=str(run_dir), config=to_dict(cfg),
                                        name=run_dir.name, resume="allow")
            except ImportError:
                log.warning("train.wandb is on but wandb is not installed: pip install 'astropt[wandb]'")

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        try:
            with open(self.path, "a") as fh:
                fh.write(json.dumps(record) + "\n")
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full(self.path, "the lines already written and the last checkpoint are kept") from exc
            raise
        step = record["step"]
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)):
                if self.tb is not None:
                    self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
