"""Fingerprints of inputs: what resumable work stores beside its partial output and checks
on restart, so that it never resumes over inputs that changed.

A fingerprint is a short hex digest of plain data: object ids, file sizes and modification
times (``file_stamp``), content hashes of arrays, and the settings of the job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

DIGEST_CHARS = 16


def digest(*parts: Any) -> str:
    """A stable short digest of JSON-serialisable ``parts`` (other objects via ``str``)."""
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:DIGEST_CHARS]


def array_digest(array: np.ndarray) -> str:
    """A digest of an array's dtype, shape and bytes."""
    a = np.ascontiguousarray(array)
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.tobytes())
    return h.hexdigest()[:DIGEST_CHARS]


def file_stamp(path: str | os.PathLike) -> list[Any]:
    """``[name, size, mtime_ns]`` of a file (``[name, None, None]`` if it does not exist)."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        return [str(path), None, None]
    return [str(path), stat.st_size, stat.st_mtime_ns]


def tree_stamps(path: str | os.PathLike) -> list[list[Any]]:
    """Stamps of a file, or of every file under a folder (sorted by path)."""
    path = Path(path)
    if not path.is_dir():
        return [file_stamp(path)]
    return [file_stamp(p) for p in sorted(path.rglob("*")) if p.is_file()]


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """A digest of the stamps of ``paths``."""
    return digest([file_stamp(p) for p in paths])
