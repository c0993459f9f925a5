"""The sharded checkpoint format: a folder of ``torch.distributed.checkpoint`` (DCP) shards.

Each rank writes its own ``__R_0.distcp``; the coordinator (rank 0) writes ``.metadata``
(which tensor chunk lives where) once every rank has reported its shards. Loading reshards
to whatever layout the caller's state dict has: DTensor shards at any world size, or full
tensors in one process without a process group.

Reading never runs code from the folder: DCP unpickles ``.metadata`` and the non-tensor
values (optimizer hyperparameters) freely, so both are first read with a restricted
unpickler that admits only the classes DCP writes.
"""

from __future__ import annotations

import contextlib
import io
import pickle
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import DefaultLoadPlanner
from torch.distributed.checkpoint.api import CheckpointException

METADATA = ".metadata"  # DCP's name

# The globals a DCP .metadata pickle refers to (module -> names; None: any name).
_METADATA_GLOBALS: dict[str, set[str] | None] = {
    "torch.distributed.checkpoint.metadata": None,
    "torch.distributed.checkpoint.filesystem": {"_StorageInfo"},
    "torch.serialization": {"_get_layout"},
    "torch": {"Size"},
    "pathlib": {"Path", "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath"},
    "collections": {"OrderedDict"},
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = _METADATA_GLOBALS.get(module, set())
        is_dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if allowed is not None and name not in allowed and not is_dtype:
            raise pickle.UnpicklingError(f"{module}.{name} is not part of DCP metadata")
        return super().find_class(module, name)


class _SafeLoadPlanner(DefaultLoadPlanner):
    """DCP's planner, with non-tensor values first read as plain data (``weights_only``)."""

    def load_bytes(self, read_item: Any, value: io.BytesIO) -> None:
        torch.load(value, weights_only=True)  # raises unless the value is plain data
        value.seek(0)
        super().load_bytes(read_item, value)


@contextlib.contextmanager
def _dcp_calls() -> Iterator[bool]:
    """Yield DCP's ``no_dist``: True in one process without a process group (DCP then reads
    or writes everything itself; its warning that it assumes so is expected here).

    DCP reports a failure on any rank to every rank as a ``CheckpointException`` (a
    ``BaseException`` holding each rank's error); the lowest failing rank's error is raised
    instead, so that callers handle an OSError or a damaged file as usual.
    """
    no_dist = not (dist.is_available() and dist.is_initialized())
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            yield no_dist
    except CheckpointException as exc:
        if not exc.failures:
            raise
        first, _ = exc.failures[min(exc.failures)]
        raise first from exc


def write(folder: Path, tensors: dict[str, Any]) -> None:
    """Every rank writes (and fsyncs) its shards of ``tensors`` into ``folder``; a collective
    that returns once ``.metadata`` is written."""
    with _dcp_calls() as no_dist:
        dcp.save(tensors, checkpoint_id=folder, no_dist=no_dist)


def check(folder: Path) -> None:
    """Raise ValueError unless ``.metadata`` reads (as plain DCP metadata) and every shard
    file it names is there and long enough."""
    try:
        with open(folder / METADATA, "rb") as fh:
            metadata = _MetadataUnpickler(fh).load()
        storage = metadata.storage_data
    except FileNotFoundError as exc:
        raise ValueError(f"{folder}: incomplete sharded checkpoint ({METADATA} missing)") from exc
    except Exception as exc:  # noqa: BLE001 - a damaged pickle raises many kinds
        raise ValueError(f"{folder}: unreadable sharded checkpoint ({METADATA}: {type(exc).__name__}: "
                         f"{str(exc)[:200]})") from exc
    needed: dict[str, int] = {}
    for info in storage.values():
        needed[info.relative_path] = max(needed.get(info.relative_path, 0), info.offset + info.length)
    for name, size in sorted(needed.items()):
        shard = folder / name
        if not shard.is_file():
            raise ValueError(f"{folder}: incomplete sharded checkpoint (shard {name} missing)")
        if shard.stat().st_size < size:
            raise ValueError(f"{folder}: incomplete sharded checkpoint (shard {name} is cut short)")


def read(folder: Path, tensors: dict[str, Any]) -> None:
    """Fill ``tensors`` in place from ``folder`` (only its keys are read), resharded to the
    layout of its values. Call :func:`check` first."""
    with _dcp_calls() as no_dist:
        dcp.load(tensors, checkpoint_id=folder, planner=_SafeLoadPlanner(), no_dist=no_dist)
