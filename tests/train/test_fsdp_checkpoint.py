"""FSDP checkpoints on 2 Gloo processes: sharded save, resume on 1 and on 2 processes, export."""

from __future__ import annotations

import shutil

import torch
from train_fixtures import run_ranks, tiny_config

from astropt.model import AstroPT
from astropt.train import checkpoint as ckpt
from astropt.train.export import export
from astropt.train.logging import read_metrics
from astropt.train.loop import train

# Across world sizes the gradients are summed in a different order (reduce-scatter of two
# half-batch gradients vs one full batch) in float32: relative differences stay ~1e-7;
# at the same world size the resumed run is bitwise the uninterrupted one.
RTOL = 1e-5
STEPS, SAVED = 4, 2  # the run saves after steps 2 and 4; the "killed" one only after 2
COMMON = [f"train.max_steps={STEPS}", f"train.ckpt_interval={SAVED}", "train.eval_interval=0", "train.keep_last=0"]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir)}


def _killed_after_the_first_save(run_dir) -> None:
    """The run folder as a kill during the save of the last step leaves it: the checkpoint
    of step SAVED, and the temporary folder of the last one with some of its shards."""
    shutil.rmtree(ckpt.checkpoint_path(run_dir, STEPS, sharded=True), ignore_errors=True)
    ckpt.checkpoint_path(run_dir, STEPS).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "final", ignore_errors=True)
    shutil.copytree(ckpt.checkpoint_path(run_dir, SAVED, sharded=True), _partial(run_dir))
    (_partial(run_dir) / ".metadata").unlink()


def _partial(run_dir):
    return run_dir / ckpt.CKPT_DIR / f".step-{STEPS:08d}.tmp"


def test_sharded_checkpoint_resumes_on_one_and_two_processes_and_exports(shard_dir, tmp_path):
    run = tmp_path / "run"
    sharded = tiny_config(shard_dir, run, "data.batch_size=2", "train.fsdp=true", *COMMON)
    run_ranks(sharded)
    reference = _losses(run)
    assert sorted(reference) == list(range(1, STEPS + 1))
    folder = ckpt.checkpoint_path(run, STEPS, sharded=True)
    assert len(list(folder.glob("*.distcp"))) == 2, "each rank writes its own shards"
    assert not ckpt.checkpoint_path(run, STEPS).exists(), "FSDP writes folders, not single files"

    # The sharded checkpoint exports to the weights the run ended with.
    exported = AstroPT.from_pretrained(export(run, tmp_path / "exported", step=STEPS))
    final = AstroPT.from_pretrained(run / "final")
    for name, value in final.state_dict().items():
        assert torch.equal(value, exported.state_dict()[name]), name

    # Resume on one process (no process group): DCP reshards into full tensors.
    _killed_after_the_first_save(run)
    train(tiny_config(shard_dir, run, "data.batch_size=4", *COMMON), resume=True)
    assert not _partial(run).exists()
    one = _losses(run)
    assert sorted(one) == list(range(1, STEPS + 1))
    worst = max(abs(one[s] - reference[s]) / abs(reference[s]) for s in range(SAVED + 1, STEPS + 1))
    assert worst < RTOL, (one, reference)
    assert ckpt.checkpoint_path(run, STEPS).is_file(), "one process writes a single file"

    # Resume on two processes again: bitwise the uninterrupted run.
    _killed_after_the_first_save(run)
    run_ranks(sharded, resume=True)
    two = _losses(run)
    assert two == reference
    print(f"resumed on 1 process: worst relative loss difference {worst:.2e}; on 2: bitwise")
