"""Atomic file writes: a reader never sees a half-written file.

Every file the project writes (configs, weights, shards, checkpoints, reports) goes through
a temporary name in the same folder, is fsynced, then renamed over the target. The file gets
the permissions an ordinary ``open`` would give (``0666`` minus the umask), so that other
users and ranks on a shared file system can read it. A full disk (or quota) is a
:class:`DiskFullError` naming the file; the previous version of the file is kept.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


class DiskFullError(OSError):
    """No space (or quota) left while writing a file; the message names the file."""


_FULL = (errno.ENOSPC, errno.EDQUOT)


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (or what caused it) says the disk or quota is full. Writers such as
    ``torch.save`` wrap the OS error in their own exception, keeping only its text."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return True
        if "No space left on device" in str(exc) or "Disk quota exceeded" in str(exc):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: read it by setting it, then restore it
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success fsync it and rename it over ``path``.

    On any exception the temporary file is removed and ``path`` is left untouched; a full
    disk becomes a :class:`DiskFullError` naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 whatever the umask
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        tmp_path.unlink(missing_ok=True)
        if is_disk_full(exc) and not isinstance(exc, DiskFullError):
            raise disk_full(path, "the previous version is kept" if path.exists() else "nothing was written") from exc
        raise


def disk_full(path: Path, kept: str) -> DiskFullError:
    """The error for a full disk while writing ``path``; ``kept`` says what is left intact."""
    error = DiskFullError(
        f"no space left writing {path}: the disk is full (or the quota used up); {kept}. "
        "Free some space and run the command again (it resumes where it can)"
    )
    error.errno = errno.ENOSPC
    return error


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems do not support fsync on directories
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder + rename."""
    atomic_write_bytes(path, text.encode())


def atomic_write_bytes(path: str | os.PathLike, blob: bytes) -> None:
    """Write bytes atomically: temp file in the same folder, fsync, ``os.replace``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(blob)


def publish_folder(tmp: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename the completely written folder ``tmp`` to ``path``, so that ``path`` is there
    whole or not at all (for outputs written by several processes, e.g. sharded checkpoints).

    The caller has fsynced the files inside. A folder already at ``path`` is replaced: it is
    moved aside first and deleted after the rename.
    """
    tmp, path = Path(tmp), Path(path)
    old = path.with_name(f".{path.name}.old.tmp")
    if path.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    shutil.rmtree(old, ignore_errors=True)
