"""One writer per output: an advisory lock file beside the output that names its holder.

``with output_lock(path):`` creates ``PATH.lock`` (``runs/tiny.lock`` for the run folder
``runs/tiny``, ``emb.parquet.lock`` for ``emb.parquet``) holding the pid, host, start time
and command line of the holder, and removes it on exit. A second writer is refused with a
message naming the holder. A lock whose holder is gone (same host, no such process) is
stale: it is taken over with a warning. A lock of another host cannot be checked from
here, so the message says how to remove it once that job is known to be dead.

The lock file is made complete under a temporary name and hard-linked into place, which
is atomic also on NFS: a reader never sees a half-written lock. The lock is re-entrant in
one process (a run that synthesises its own data folder takes both locks).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import os
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

_HELD: set[str] = set()  # lock files held by this process


class OutputLocked(FileExistsError):
    """Another process is writing the same output; the message names it."""


def lock_path(target: str | os.PathLike) -> Path:
    """The lock file of an output file or folder: ``TARGET.lock`` beside it."""
    target = Path(target).expanduser().absolute()
    return target.with_name(target.name + ".lock")


def write_holder(target: str | os.PathLike, pid: int | None = None, host: str | None = None) -> Path | None:
    """Create the lock of ``target`` for ``pid`` on ``host`` (default: this process).

    Returns the lock path, or None when a lock already exists.
    """
    lock = lock_path(target)
    lock.parent.mkdir(parents=True, exist_ok=True)
    pid = pid or os.getpid()
    holder = {"pid": pid, "host": host or socket.gethostname(), "started": time.time(),
              "command": " ".join(sys.argv)[:300], "process_start": _process_start(pid)}
    fd, tmp = tempfile.mkstemp(prefix=f".{lock.name}.", dir=lock.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(holder, fh)
        os.link(tmp, lock)
    except FileExistsError:
        return None
    finally:
        os.unlink(tmp)
    return lock


def read_holder(lock: Path) -> dict[str, Any] | None:
    """The holder recorded in a lock file (None if it vanished or is not a lock record)."""
    try:
        holder = json.loads(lock.read_text())
    except (OSError, ValueError):
        return None
    return holder if isinstance(holder, dict) else None


def _process_start(pid: int) -> str | None:
    """When process ``pid`` started (Linux: clock ticks since boot), to tell a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _is_stale(holder: dict[str, Any] | None) -> bool:
    if holder is None:
        return True
    if holder.get("host") != socket.gethostname():
        return False  # cannot be checked from here
    pid = int(holder.get("pid", 0))
    if not _alive(pid):
        return True
    started = holder.get("process_start")
    return started is not None and _process_start(pid) not in (None, started)  # the pid was reused


def _describe(lock: Path, holder: dict[str, Any]) -> str:
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    same_host = holder.get("host") == socket.gethostname()
    advice = (
        "wait for it to finish or stop it"
        if same_host
        else f"if no such process runs on {holder.get('host')} any more, delete {lock}"
    )
    return (
        f"{str(lock)[: -len('.lock')]} is being written by pid {holder.get('pid')} "
        f"on host {holder.get('host')} (since {started}: {holder.get('command', '?')!r}); "
        f"lock file {lock}; {advice}"
    )


@contextlib.contextmanager
def output_lock(target: str | os.PathLike) -> Iterator[Path]:
    """Hold the lock of ``target`` for the duration of the block (see module docstring).

    Raises:
        OutputLocked: another live process holds it.
    """
    lock = lock_path(target)
    if str(lock) in _HELD:
        yield lock
        return
    for _ in range(3):
        if write_holder(target) is not None:
            break
        holder = read_holder(lock)
        if not _is_stale(holder):
            raise OutputLocked(_describe(lock, holder))
        log.warning("removing the stale lock %s of pid %s on %s (no such process)", lock,
                    (holder or {}).get("pid"), (holder or {}).get("host"))
        if read_holder(lock) == holder:  # not replaced by a live writer meanwhile
            lock.unlink(missing_ok=True)
    else:
        raise OutputLocked(f"could not take the lock {lock}; another writer keeps replacing it")
    _HELD.add(str(lock))
    try:
        yield lock
    finally:
        _HELD.discard(str(lock))
        if (read_holder(lock) or {}).get("pid") == os.getpid():
            lock.unlink(missing_ok=True)


def writes_to(argument: str) -> Callable[[Callable], Callable]:
    """Decorator: hold :func:`output_lock` on the function's ``argument`` (a path; nothing
    is locked when it is None) while the function runs."""

    def decorate(func: Callable) -> Callable:
        signature = inspect.signature(func)

        @functools.wraps(func)
        def locked(*args: Any, **kwargs: Any) -> Any:
            target = signature.bind(*args, **kwargs).arguments.get(argument)
            with output_lock(target) if target is not None else contextlib.nullcontext():
                return func(*args, **kwargs)

        return locked

    return decorate
