"""Checkpoints and exact resume: kill -9 mid-run, crash mid-write, damaged files, run folders."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from train_fixtures import tiny_config

from astropt.config import to_dict
from astropt.train import checkpoint as ckpt
from astropt.train.export import export, plot
from astropt.train.logging import read_metrics
from astropt.train.loop import train

CLI = "import sys; from astropt.cli import main; sys.exit(main(sys.argv[1:]))"


def _overrides(cfg) -> list[str]:
    """The config as CLI overrides (the subprocess rebuilds exactly the same config)."""
    out = []
    for section, values in to_dict(cfg).items():
        for key, value in values.items():
            if key != "modalities":
                out.append(f"{section}.{key}={value!r}" if isinstance(value, str) else f"{section}.{key}={value}")
    m = to_dict(cfg)["model"]["modalities"][0]
    out += [f"model.modalities.0.{k}={m[k]}" for k in ("image_size", "patch_size", "n_channels", "input_size", "patch_order")]
    return [o.replace("True", "true").replace("False", "false") for o in out]


def _launch(cfg, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", CLI, "-q", "train", *_overrides(cfg), *extra], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def test_sigkill_mid_run_then_resume_gives_identical_losses(shard_dir, tmp_path):
    common = ["train.max_steps=60", "train.ckpt_interval=10", "train.eval_interval=20", "data.augment=true",
              "train.keep_last=2"]
    reference = tiny_config(shard_dir, tmp_path / "reference", *common)
    killed = tiny_config(shard_dir, tmp_path / "killed", *common)
    proc = _launch(reference)
    victim = _launch(killed)
    first = ckpt.checkpoint_path(tmp_path / "killed", 10)
    deadline = time.time() + 120
    while not first.exists() and victim.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    time.sleep(0.03)  # a moment later: mid-step, mid-log-line or mid-checkpoint
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert proc.wait(timeout=240) == 0, proc.stderr.read().decode()[-2000:]
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before it was killed"
    killed_at = max(_losses(tmp_path / "killed"), default=0)

    resumed = _launch(killed, "--resume")
    assert resumed.wait(timeout=240) == 0, resumed.stderr.read().decode()[-2000:]
    expected, got = _losses(tmp_path / "reference"), _losses(tmp_path / "killed")
    assert sorted(got) == sorted(expected) == list(range(1, 61))
    assert got == expected  # bitwise: fp32 on the CPU, same seed
    start = ckpt.list_checkpoints(tmp_path / "killed")
    assert [s for s, _ in start] == [50, 60]  # keep_last=2
    print(f"killed after step {killed_at}; resumed losses equal bitwise")


def test_crash_during_checkpoint_write_keeps_the_last_good_one(shard_dir, tmp_path, monkeypatch):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.max_steps=8")
    real_save = torch.save

    def dying_save(obj, path, *args, **kwargs):
        if obj["step"] == 8:
            Path(path).write_bytes(b"half a checkpoint")
            raise OSError("disk full (simulated)")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", dying_save)
    with pytest.raises(OSError, match="simulated"):
        train(cfg)
    monkeypatch.undo()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "run")] == [4]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))
    assert ckpt.load_latest(tmp_path / "run")["step"] == 4
    train(cfg, resume=True)
    assert ckpt.load_latest(tmp_path / "run")["step"] == 8


def test_damaged_latest_checkpoint_falls_back(shard_dir, tmp_path):
    run = train(tiny_config(shard_dir, tmp_path / "run"))
    ckpt.checkpoint_path(run, 8).write_bytes(b"\x00" * 100)  # e.g. a copy cut short
    (run / "checkpoints" / ".step-00000012.pt.x.tmp").write_bytes(b"junk")  # a killed write
    assert ckpt.load_latest(run)["step"] == 4
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        ckpt.load_latest(run, step=8)


def test_run_folder_is_not_reused_silently(shard_dir, tmp_path):
    cfg = tiny_config(shard_dir, tmp_path / "run", "train.max_steps=4")
    train(cfg)
    with pytest.raises(FileExistsError, match="--resume"):
        train(cfg)
    before = read_metrics(tmp_path / "run")
    train(cfg, overwrite=True)
    assert [r["step"] for r in read_metrics(tmp_path / "run")] == [r["step"] for r in before]


def test_export_and_plot(shard_dir, tmp_path):
    from astropt.model import load_pretrained

    run = train(tiny_config(shard_dir, tmp_path / "run"))
    out = export(run, tmp_path / "exported", step=4)
    final = load_pretrained(run / "final")
    at_4 = load_pretrained(out)
    last = load_pretrained(export(run, tmp_path / "last"))
    for name, value in final.state_dict().items():
        assert torch.equal(value, last.state_dict()[name])
    assert any(not torch.equal(v, at_4.state_dict()[k]) for k, v in final.state_dict().items())
    png = plot(run)
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert ckpt.scheduled_steps(tiny_config(shard_dir, tmp_path, "train.ckpt_schedule=log",
                                            "train.ckpt_count=4", "train.max_steps=1000").train) == {1, 10, 100, 1000}
