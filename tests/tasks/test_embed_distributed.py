"""``torchrun --nproc_per_node=N astropt embed``: the command sets up the process group
(Gloo on CPU), ranks embed disjoint parts, and the result is bitwise the one-process one;
a run killed part-way resumes at any world size with nothing duplicated or missing."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow.parquet as pq

from astropt.tasks.embed import embed, load_embeddings

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def torchrun(nproc: int, model, data, out, part_size: int = 4) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "astropt", "-q", "embed", str(model), str(data), "--out", str(out),
            "--part-size", str(part_size), "--dtype", "float32", "--device", "cpu"]


def same_table(a, b) -> None:
    ta, tb = load_embeddings(a), load_embeddings(b)
    assert ta.ids == tb.ids
    np.testing.assert_array_equal(ta.matrix(), tb.matrix())  # bitwise


def test_two_ranks_equal_one_process(model_dir, shard_dir, tmp_path):
    single = embed(model_dir, shard_dir, tmp_path / "one.parquet", part_size=4, dtype="float32",
                   device="cpu", progress=False)
    proc = subprocess.run(torchrun(2, model_dir, shard_dir, tmp_path / "two.parquet"), env=ENV,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    same_table(single, tmp_path / "two.parquet")
    assert pq.read_table(tmp_path / "two.parquet").num_rows == len(load_embeddings(single).ids)
    assert not (tmp_path / "two.parquet.parts").exists()


def _kill_after_first_parts(cmd, parts_dir, timeout=120) -> bool:
    """Start ``cmd`` and SIGKILL its whole process group once a part is on disk; whether it
    was killed before finishing."""
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    start = time.monotonic()
    while proc.poll() is None and time.monotonic() - start < timeout:
        if parts_dir.is_dir() and any(parts_dir.glob("part-*.parquet")):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.05)
    if proc.poll() is None:  # neither a part nor the end in time: never leave it running
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return False


def test_killed_run_resumes_at_any_world_size(model_dir, shard_dir, tmp_path):
    reference = embed(model_dir, shard_dir, tmp_path / "ref.parquet", part_size=2, dtype="float32",
                      device="cpu", progress=False)
    for nproc_after in (1, 2):
        out = tmp_path / f"resumed{nproc_after}.parquet"
        # one object per part: the most parts after the first, so the kill lands mid-run
        killed = _kill_after_first_parts(torchrun(2, model_dir, shard_dir, out, part_size=1),
                                         tmp_path / f"resumed{nproc_after}.parquet.parts")
        assert killed, "the run finished before it could be killed; make the job longer"
        assert not out.exists()
        proc = subprocess.run(torchrun(nproc_after, model_dir, shard_dir, out, part_size=1), env=ENV,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        same_table(reference, out)
