"""The advisory one-writer lock: names its holder, detects stale locks, is released."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from astropt.locks import OutputLocked, lock_path, output_lock, write_holder


def test_lock_refuses_a_second_holder_and_is_released(tmp_path):
    target = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_holder(target, pid=proc.pid)
        with pytest.raises(OutputLocked) as info:
            with output_lock(target):
                pass
        message = str(info.value)
        assert f"pid {proc.pid}" in message and socket.gethostname() in message and str(lock_path(target)) in message
    finally:
        proc.kill()
        proc.wait()
    lock_path(target).unlink()
    with output_lock(target):
        assert json.loads(lock_path(target).read_text())["pid"] == os.getpid()
        with output_lock(target):  # re-entrant in one process
            pass
        assert lock_path(target).exists()
    assert not lock_path(target).exists()


def test_lock_is_released_on_error_and_a_foreign_host_is_never_called_stale(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(RuntimeError), output_lock(target):
        raise RuntimeError("boom")
    assert not lock_path(target).exists()
    write_holder(target, pid=1, host="some-other-node")
    with pytest.raises(OutputLocked, match="some-other-node.*delete"):
        with output_lock(target):
            pass


def test_prepare_synth_and_finetune_take_the_lock_of_their_output(tmp_path):
    from astropt.data.prepare import prepare
    from astropt.data.sources import SourceConfig
    from astropt.data.synthetic import synthesize
    from astropt.tasks.finetune import finetune

    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for name, call in [
            ("prepared", lambda out: prepare(SourceConfig(path=str(tmp_path)), out, progress=False)),
            ("synth", lambda out: synthesize(out, 4, progress=False)),
            ("finetuned", lambda out: finetune("no-such-model", "no-such-data", ["z"], out=out)),
        ]:
            write_holder(tmp_path / name, pid=proc.pid)
            with pytest.raises(OutputLocked, match=f"pid {proc.pid}"):
                call(tmp_path / name)
            assert not (tmp_path / name).exists()
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_whose_pid_was_reused_by_another_process_is_stale(tmp_path):
    target = tmp_path / "out"
    lock = write_holder(target)  # this very pid, but recorded with another process start
    holder = json.loads(lock.read_text())
    lock.write_text(json.dumps({**holder, "pid": os.getppid(), "process_start": "1"}))
    with output_lock(target):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
