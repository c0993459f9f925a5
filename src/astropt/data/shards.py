"""Prepared shards: the one on-disk format every downstream stage reads.

Layout of a prepared folder::

    DIR/manifest.json          counts, array shapes/dtypes, labels, per-band statistics
                               (mean, std, sky noise: astropt.data.noise), source
                               description, config hash
    DIR/shards/part-00000.arrow
    DIR/shards/part-00001.arrow ...

Each shard is an uncompressed Arrow IPC *file* (memory-mapped for zero-copy random
access; ``pyarrow.ipc.open_file`` and Hugging Face ``datasets`` (``"arrow"`` builder)
open it directly). Each row is one object:

- ``id`` (string);
- one column per array field, flattened: ``fixed_size_list<float32>`` when every object
  has the same shape (e.g. ``image`` of shape ``(C, H, W)``; the shape is in the manifest
  and the schema metadata) or ``list<float32>`` for variable-length 1-D arrays
  (spectra on different grids, light curves);
- one column per label (float64, int64 or string).

Shards are written atomically (temporary name + rename), one at a time and independently,
so a crashed or parallel writer never leaves a partial shard and finished shards are kept
on resume. The manifest is written last.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from astropt.atomic import atomic_path, atomic_write_text
from astropt.data.noise import pooled_noise, sample_noise
from astropt.errors import DataError  # noqa: F401  (re-exported)
from astropt.fingerprint import digest, file_stamp

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
SHARD_DIR = "shards"
FORMAT = "astropt-shards"
FORMAT_VERSION = 1


@dataclass
class ArraySpec:
    """Shape and dtype of one array field; ``shape[0] == -1`` marks a variable-length 1-D array."""

    shape: list[int]
    dtype: str = "float32"

    @property
    def variable(self) -> bool:
        return len(self.shape) == 1 and self.shape[0] == -1

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass
class Manifest:
    """What a prepared folder holds."""

    n_objects: int
    arrays: dict[str, ArraySpec]
    labels: dict[str, str]
    shards: list[dict[str, Any]]
    band_stats: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    config_hash: str = ""
    rejects: int = 0
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2)

    @classmethod
    def read(cls, directory: str | os.PathLike) -> Manifest:
        path = Path(directory) / MANIFEST
        if not path.is_file():
            raise DataError(f"{directory}: not a prepared shard folder (no {MANIFEST})")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: corrupt manifest ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise DataError(f"{path}: not an AstroPT shard manifest (no {FORMAT!r} format record)")
        missing = [k for k in ("n_objects", "arrays", "labels", "shards") if k not in data]
        if missing:
            raise DataError(f"{path}: the manifest is missing the keys {missing}; prepare the folder again")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise DataError(f"{path}: unknown manifest keys {unknown}")
        try:
            data["arrays"] = {k: ArraySpec(**v) for k, v in data["arrays"].items()}
            manifest = cls(**data)
        except (AttributeError, TypeError) as exc:
            raise DataError(f"{path}: malformed manifest ({exc}); prepare the folder again") from None
        counted = sum(int(e.get("rows", 0)) for e in manifest.shards if isinstance(e, dict))
        if counted != manifest.n_objects or not all(isinstance(e, dict) and "file" in e for e in manifest.shards):
            raise DataError(
                f"{path}: n_objects={manifest.n_objects} but its shard entries hold {counted} rows; "
                "the manifest is damaged, prepare the folder again"
            )
        return manifest


def shard_path(directory: str | os.PathLike, index: int) -> Path:
    return Path(directory) / SHARD_DIR / f"part-{index:05d}.arrow"


def _label_type(values: list[Any]) -> pa.DataType:
    if all(isinstance(v, str) for v in values):
        return pa.string()
    if all(isinstance(v, (bool, int, np.integer)) and not isinstance(v, float) for v in values):
        return pa.int64()
    return pa.float64()


def records_to_table(records: list[dict[str, Any]], arrays: dict[str, ArraySpec]) -> pa.Table:
    """Turn Observation records into an Arrow table (see module docstring for the layout)."""
    if not records:
        raise ValueError("records_to_table needs at least one record")
    columns: dict[str, pa.Array] = {"id": pa.array([str(r["id"]) for r in records], pa.string())}
    for name, spec in arrays.items():
        if spec.variable:
            items = [np.asarray(r[name], dtype=np.float32).ravel() for r in records]
            offsets = np.zeros(len(items) + 1, dtype=np.int32)
            np.cumsum([len(a) for a in items], out=offsets[1:])
            flat = np.concatenate(items) if items else np.zeros(0, np.float32)
            columns[name] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
        else:
            stack = np.stack([np.asarray(r[name], dtype=np.float32) for r in records])
            if list(stack.shape[1:]) != list(spec.shape):
                raise DataError(
                    f"array {name!r}: expected shape {spec.shape}, got {list(stack.shape[1:])}"
                )
            flat = pa.array(stack.reshape(-1))
            columns[name] = pa.FixedSizeListArray.from_arrays(flat, spec.size)
    label_names = sorted({k for r in records for k in r.get("labels", {})})
    for name in label_names:
        values = [r.get("labels", {}).get(name) for r in records]
        present = [v for v in values if v is not None]
        tp = _label_type(present) if present else pa.float64()
        if tp == pa.float64():
            values = [np.nan if v is None else float(v) for v in values]
        columns[name] = pa.array(values, tp)
    return pa.table(columns)


def band_sums(table: pa.Table, name: str, spec: ArraySpec) -> dict[str, list[float]]:
    """Per-band count, sum, sum of squares and sky noise of an image column (for the manifest)."""
    arr = fixed_column(table, name, spec).astype(np.float64)  # (n, C, H, W)
    axes = tuple(i for i in range(arr.ndim) if i != 1)
    stats = {
        "count": [float(arr.size // arr.shape[1])] * arr.shape[1],
        "sum": arr.sum(axis=axes).tolist(),
        "sumsq": np.square(arr).sum(axis=axes).tolist(),
    }
    if min(arr.shape[2:]) >= 8:  # stamps big enough to have a sky border
        stats["noise"] = sample_noise(arr)
    return stats


def write_shard(
    directory: str | os.PathLike,
    index: int,
    records: list[dict[str, Any]],
    arrays: dict[str, ArraySpec],
    batch_rows: int = 256,
) -> dict[str, Any]:
    """Write one shard atomically; returns its manifest entry (file, rows, stats)."""
    table = records_to_table(records, arrays)
    stats = {n: band_sums(table, n, s) for n, s in arrays.items() if len(s.shape) == 3}
    uid = uuid.uuid4().hex  # names this shard in the manifest: a shard copied in from elsewhere is found
    meta = {b"astropt": json.dumps({"arrays": {k: asdict(v) for k, v in arrays.items()}, "stats": stats,
                                    "uid": uid}).encode()}
    table = table.replace_schema_metadata(meta)
    path = shard_path(directory, index)
    with atomic_path(path) as tmp:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=batch_rows)
    return {"file": str(path.relative_to(directory)), "rows": table.num_rows, "stats": stats, "uid": uid}


def shard_entry(directory: str | os.PathLike, index: int) -> dict[str, Any] | None:
    """Manifest entry of an already written shard (for resuming), or None if absent/unreadable."""
    path = shard_path(directory, index)
    if not path.is_file():
        return None
    try:
        with pa.memory_map(str(path)) as source:
            reader = pa.ipc.open_file(source)
            meta = json.loads(reader.schema.metadata[b"astropt"])
            rows = sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches))
    except (pa.ArrowInvalid, OSError, KeyError, json.JSONDecodeError) as exc:
        log.warning("shard %s is unreadable (%s); it will be rewritten", path, exc)
        return None
    return {"file": str(path.relative_to(directory)), "rows": rows, "stats": meta.get("stats", {}),
            "uid": meta.get("uid", "")}


def finalize(
    directory: str | os.PathLike,
    entries: list[dict[str, Any]],
    arrays: dict[str, ArraySpec],
    labels: dict[str, str],
    source: dict[str, Any] | None = None,
    config_hash: str = "",
    rejects: int = 0,
) -> Manifest:
    """Aggregate shard entries into ``manifest.json`` (written last, atomically)."""
    band_stats: dict[str, dict[str, list[float]]] = {}
    for name in {n for e in entries for n in e.get("stats", {})}:
        count = np.sum([e["stats"][name]["count"] for e in entries], axis=0)
        total = np.sum([e["stats"][name]["sum"] for e in entries], axis=0)
        sumsq = np.sum([e["stats"][name]["sumsq"] for e in entries], axis=0)
        mean = total / count
        std = np.sqrt(np.maximum(sumsq / count - mean**2, 0.0))
        band_stats[name] = {"mean": mean.tolist(), "std": std.tolist()}
        if all("noise" in e["stats"][name] for e in entries):  # shards of older versions have none
            band_stats[name]["noise"] = pooled_noise([e["stats"][name]["noise"] for e in entries])
    manifest = Manifest(
        n_objects=int(sum(e["rows"] for e in entries)),
        arrays=arrays,
        labels=labels,
        shards=[{"file": e["file"], "rows": e["rows"], **({"uid": e["uid"]} if e.get("uid") else {})}
                for e in entries],
        band_stats=band_stats,
        source=source or {},
        config_hash=config_hash,
        rejects=rejects,
    )
    atomic_write_text(Path(directory) / MANIFEST, manifest.to_json())
    return manifest


def check_shard(path: Path, table: pa.Table, entry: dict[str, Any]) -> None:
    """Refuse a shard that is not the one the manifest lists (other rows, another folder's)."""
    if table.num_rows != entry["rows"]:
        raise DataError(
            f"{path}: has {table.num_rows} rows but the manifest lists {entry['rows']}; it is not the shard "
            "this folder was prepared with (copied from another folder?); prepare the folder again"
        )
    uid = entry.get("uid")
    if uid:
        try:
            found = json.loads((table.schema.metadata or {}).get(b"astropt", b"{}")).get("uid")
        except json.JSONDecodeError:
            found = None
        if found != uid:
            raise DataError(
                f"{path}: is not the shard this folder's manifest was written with (shard id {found} != {uid}); "
                "it comes from another folder or run; prepare the folder again"
            )


def fixed_column(table: pa.Table | pa.RecordBatch, name: str, spec: ArraySpec) -> np.ndarray:
    """A fixed-shape array column as a ``(rows, *shape)`` numpy array (zero-copy if possible)."""
    col = table.column(name)
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    flat = col.flatten().to_numpy(zero_copy_only=False)
    return flat.reshape(len(col), *spec.shape)


class ShardSet:
    """Random access to the objects of a prepared folder (memory-mapped shards).

    ``len(s)``, ``s.ids``, ``s[i]`` (one Observation record) and ``s.get_batch(indices)``
    (stacked arrays + labels, vectorised per shard).
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        self._tables: list[pa.Table] = []
        for entry in self.manifest.shards:
            path = self.directory / entry["file"]
            try:
                source = pa.memory_map(str(path))
                table = pa.ipc.open_file(source).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: unreadable shard ({exc})") from exc
            check_shard(path, table, entry)
            self._tables.append(table)
        sizes = np.array([t.num_rows for t in self._tables], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self._ids: list[str] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def fingerprint(self) -> str:
        """A digest of what this folder holds now (manifest + shard files), for resumes."""
        files = [self.directory / e["file"] for e in self.manifest.shards]
        return digest(self.manifest.to_json(), [file_stamp(p)[1:] for p in files])

    @property
    def arrays(self) -> dict[str, ArraySpec]:
        return self.manifest.arrays

    @property
    def label_names(self) -> list[str]:
        return list(self.manifest.labels)

    @property
    def ids(self) -> list[str]:
        if self._ids is None:
            self._ids = [i for t in self._tables for i in t.column("id").to_pylist()]
        return self._ids

    def labels(self, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Whole label columns as numpy arrays."""
        names = self.label_names if names is None else names
        out = {}
        for name in names:
            if name not in self.manifest.labels:
                raise DataError(f"{self.directory}: no label {name!r}; labels are {self.label_names}")
            out[name] = np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for t in self._tables])
        return out

    def _locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shard = np.searchsorted(self._starts, indices, side="right") - 1
        return shard, indices - self._starts[shard]

    def get_batch(self, indices: Any, fields: list[str] | None = None) -> dict[str, Any]:
        """Rows ``indices`` as ``{"id": [...], field: (n, *shape) or list, label: (n,)}``."""
        idx = np.asarray(indices, dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} objects")
        shard, local = self._locate(idx)
        fields = list(self.arrays) if fields is None else fields
        parts = []
        for s in np.unique(shard):
            sel = np.nonzero(shard == s)[0]
            parts.append((sel, self._tables[s].take(pa.array(local[sel]))))
        order = np.concatenate([sel for sel, _ in parts]) if parts else np.zeros(0, np.int64)
        inverse = np.argsort(order, kind="stable")
        out: dict[str, Any] = {"id": [i for _, t in parts for i in t.column("id").to_pylist()]}
        out["id"] = [out["id"][i] for i in inverse]
        for name in fields:
            spec = self.arrays[name]
            if spec.variable:
                vals = [np.asarray(v, dtype=np.float32) for _, t in parts for v in t.column(name).to_pylist()]
                out[name] = [vals[i] for i in inverse]
            else:
                out[name] = np.concatenate([fixed_column(t, name, spec) for _, t in parts])[inverse]
        for name in self.label_names:
            out[name] = np.concatenate([t.column(name).to_numpy(zero_copy_only=False) for _, t in parts])[inverse]
        return out

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One Observation record ``{"id", field: array, "labels": {...}}``."""
        row = self.get_batch([i])
        rec: dict[str, Any] = {"id": row["id"][0]}
        for name in self.arrays:
            rec[name] = row[name][0]
        rec["labels"] = {n: row[n][0].item() if hasattr(row[n][0], "item") else row[n][0] for n in self.label_names}
        return rec
