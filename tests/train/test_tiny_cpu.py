"""The shipped tiny-cpu config learns on the synthetic survey (slow: a few minutes on 2 cores)."""

from __future__ import annotations

from pathlib import Path

import pytest

import astropt.data.synthetic  # noqa: F401  (a core module: an import error fails, never skips)
from astropt.config import load_config
from astropt.train.logging import read_metrics
from astropt.train.loop import train

CONFIG = Path(__file__).parents[2] / "configs" / "tiny-cpu.yaml"
FACTOR = 0.9  # validation loss after 300 steps vs after 25: a conservative bar


@pytest.mark.slow
def test_tiny_cpu_lowers_validation_loss(tmp_path):
    cfg = load_config(CONFIG, [
        f"data.path={tmp_path / 'survey'}", "data.synth_n=1500", f"train.out_dir={tmp_path / 'run'}",
        "train.max_steps=300", "train.eval_interval=25", "train.dtype=float32", "train.device=cpu",
    ])
    run = train(cfg)
    val = [r["val_loss"] for r in read_metrics(run) if "val_loss" in r]
    print(f"tiny-cpu val loss {val[0]:.4f} -> {val[-1]:.4f} (x{val[-1] / val[0]:.3f})")
    assert val[-1] < FACTOR * val[0]
    assert (run / "final" / "model.safetensors").is_file()
