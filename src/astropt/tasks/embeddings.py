"""Reading the embeddings that :mod:`astropt.tasks.embed` writes: one Parquet file or a
partitioned folder (``part-NNNNNN.parquet`` files and ``_manifest.json``).

Two ways in, one implementation of each idea:

- :func:`load_embeddings`: the whole table in memory (what a probe or a 2-D map needs);
- :func:`iter_embeddings`: the same rows, in the same order, as batches of at most
  ``batch_rows`` rows and only the columns asked for, part by part, so an index over 10^9
  vectors is filled without holding them twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astropt.errors import DataError

META_KEY = b"astropt"
MANIFEST_NAME = "_manifest.json"  # "_": dataset readers skip it
BATCH_ROWS = 65_536


@dataclass
class Embeddings:
    """An embeddings table in memory: ids, one or more vector columns, labels, metadata."""

    ids: list[str]
    vectors: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    def matrix(self, column: str = "embedding") -> np.ndarray:
        """The ``(n, d)`` float32 matrix of one vector column (checked to be finite)."""
        values = self._column(column)
        if values.ndim != 2:
            raise DataError(
                f"embeddings column {column!r} holds token embeddings {values.shape[1:]} per object (embedded "
                "with pool 'none'): only the attention probe (`astropt probe --probe attention`) reads them; "
                "embed again with a pooling (e.g. --pool mean_max_std) for this task")
        return values

    def tokens(self, column: str = "embedding", where: str = "embeddings") -> np.ndarray:
        """The ``(n, tokens, width)`` float32 token embeddings of one column (``embed --pool
        none``), checked to be finite; ``where`` names the source in the error on pooled vectors."""
        values = self._column(column)
        if values.ndim != 3:
            raise DataError(
                f"{where}: column {column!r} holds pooled vectors (pool {self.meta.get('pool', '?')!r}, one "
                f"{values.shape[1]}-wide vector per object), but the attention probe needs token embeddings: "
                "embed with --pool none (astropt embed MODEL DATA --out FILE --pool none)")
        return values

    def _column(self, column: str) -> np.ndarray:
        if column not in self.vectors:
            raise DataError(f"embeddings have no column {column!r}; they have {sorted(self.vectors)}")
        if column not in self._checked:
            check_finite_rows(self.vectors[column], self.ids, f"embeddings column {column!r}")
            self._checked.add(column)
        return self.vectors[column]

    def __post_init__(self) -> None:
        self._checked: set[str] = set()

    @property
    def layer_columns(self) -> list[str]:
        """``embedding_l0 .. embedding_l{L-1}`` when embedded with ``layer='all'``."""
        return layer_columns(list(self.vectors))

    @property
    def default_column(self) -> str:
        return pick_default_column(list(self.vectors))

    def index_of(self, object_id: str) -> int:
        """Row of ``object_id``; a clear error (with how to list ids) when absent."""
        try:
            return self.ids.index(str(object_id))
        except ValueError:
            raise DataError(
                f"id {object_id!r} is not in the embeddings ({len(self.ids)} objects, e.g. "
                f"{self.ids[:3]}); list the ids with pyarrow.parquet.read_table(FILE, "
                "columns=['id']) or `astropt data info`"
            ) from None


def check_finite_rows(matrix: np.ndarray, ids: list[str], what: str) -> None:
    """Raise a DataError naming the objects whose row of ``matrix`` (or tokens: ``(n, tokens,
    width)``) holds a NaN or Inf."""
    bad = np.flatnonzero(~np.isfinite(matrix.reshape(len(matrix), -1)).all(axis=1))
    if bad.size:
        named = [ids[i] for i in bad[:10]]
        raise DataError(
            f"{what}: non-finite (NaN/Inf) embeddings for {bad.size} of {len(ids)} objects, e.g. {named}; "
            "check the model's weights and these objects' data (embed again once fixed)"
        )


def vector_columns(schema: pa.Schema) -> list[str]:
    """The embedding (``fixed_size_list``) columns of an embeddings table's schema."""
    return [f.name for f in schema if pa.types.is_fixed_size_list(f.type)]


def layer_columns(names: list[str]) -> list[str]:
    """``embedding_l0 .. embedding_l{L-1}`` among ``names`` (from ``layer='all'``), in order."""
    cols = [c for c in names if c.startswith("embedding_l") and c[11:].isdigit()]
    return sorted(cols, key=lambda c: int(c[11:]))


def pick_default_column(names: list[str]) -> str:
    """The vector column tasks use when none is named: ``embedding``, else the middle layer's."""
    if "embedding" in names:
        return "embedding"
    layers = layer_columns(names)
    return layers[len(layers) // 2] if layers else names[0]


def default_column(schema: pa.Schema) -> str:
    """The default vector column (:func:`pick_default_column`) of an embeddings schema."""
    return pick_default_column(vector_columns(schema))


@dataclass
class EmbeddingFiles:
    """The Parquet file(s) of an embeddings table, in row order, with its provenance."""

    path: Path
    files: list[Path]
    meta: dict[str, Any]
    n_rows: int
    schema: pa.Schema


def embedding_files(path: str | os.PathLike) -> EmbeddingFiles:
    """The files of the embeddings at ``path`` (a file, or a folder checked against its
    manifest), without reading their rows."""
    path = Path(path)
    if path.is_dir():
        files, manifest = _manifest_parts(path)
    elif path.is_file():
        files, manifest = [path], None
    else:
        raise DataError(f"{path}: no such embeddings file or folder (make one with `astropt embed`)")
    try:
        metas = [pq.ParquetFile(str(f)).metadata for f in files]
        schema = pq.read_schema(str(files[0]))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not readable Parquet ({exc})") from exc
    n_rows = sum(m.num_rows for m in metas)
    if manifest is not None and n_rows != manifest.get("n_rows"):
        raise DataError(f"{path}: {n_rows} rows in the parts but the manifest says {manifest.get('n_rows')}")
    if "id" not in schema.names:
        raise DataError(f"{path}: no 'id' column; not an embeddings file")
    if not vector_columns(schema):
        raise DataError(f"{path}: no embedding columns")
    raw = (schema.metadata or {}).get(META_KEY)
    meta = manifest if manifest is not None else json.loads(raw) if raw else {}
    return EmbeddingFiles(path, files, meta, n_rows, schema.remove_metadata())


def iter_embeddings(path: str | os.PathLike, columns: list[str] | None = None,
                    batch_rows: int = BATCH_ROWS) -> Iterator[Embeddings]:
    """The rows of the embeddings at ``path`` in order, as :class:`Embeddings` of at most
    ``batch_rows`` rows each (one part file read at a time).

    Args:
        columns: the vector and label columns to read (``id`` always is); None: all.
    """
    if batch_rows < 1:
        raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
    source = embedding_files(path)
    missing = [c for c in columns or [] if c not in source.schema.names]
    if missing:
        raise DataError(f"{path}: no column(s) {missing}; it has {source.schema.names}")
    wanted = None if columns is None else ["id", *[c for c in columns if c != "id"]]
    for file in source.files:
        try:
            for batch in pq.ParquetFile(str(file)).iter_batches(batch_size=batch_rows, columns=wanted):
                yield _to_embeddings(pa.Table.from_batches([batch]), source.meta)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{file}: a part is unreadable ({exc})") from exc


@dataclass
class VectorBatches:
    """One vector column of ``n`` rows of width ``d`` as float32 batches, re-iterable (each
    pass reads the rows again, in order): what an index is filled from."""

    batches: Callable[[], Iterator[np.ndarray]]
    n: int
    d: int

    @classmethod
    def of_array(cls, vectors: np.ndarray, batch_rows: int = BATCH_ROWS) -> VectorBatches:
        n = len(vectors)
        return cls(lambda: (vectors[i : i + batch_rows] for i in range(0, n, batch_rows)), n, vectors.shape[1])

    @classmethod
    def of_file(cls, path: str | os.PathLike, column: str, batch_rows: int = BATCH_ROWS) -> VectorBatches:
        """Column ``column`` of the embeddings at ``path``, read part by part (checked finite)."""
        source = embedding_files(path)
        if column not in vector_columns(source.schema):
            raise DataError(f"embeddings {path} have no column {column!r}; they have {vector_columns(source.schema)}")
        return cls(lambda: (e.matrix(column) for e in iter_embeddings(path, [column], batch_rows)), source.n_rows,
                   source.schema.field(column).type.list_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        return self.batches()

    def rows(self, picks: np.ndarray) -> np.ndarray:
        """The rows ``picks`` (sorted, unique) in one pass."""
        picks = np.asarray(picks, dtype=np.int64)
        out, start = [], 0
        for batch in self:
            inside = picks[(picks >= start) & (picks < start + len(batch))]
            out.append(batch[inside - start])
            start += len(batch)
        return np.concatenate(out) if out else np.empty((0, self.d), np.float32)


def label_columns(schema: pa.Schema) -> list[str]:
    """The columns of an embeddings table that are neither ``id`` nor vectors."""
    return [f.name for f in schema if f.name != "id" and not pa.types.is_fixed_size_list(f.type)]


def load_embeddings(path: str | os.PathLike, columns: list[str] | None = None) -> Embeddings:
    """Read the embeddings written by :func:`astropt.tasks.embed.embed` whole: one Parquet
    file, or a partitioned dataset folder (its parts in order, checked against its
    manifest). ``columns``: only these vector/label columns (and ``id``)."""
    source = embedding_files(path)
    wanted = None if columns is None else ["id", *[c for c in columns if c != "id"]]
    try:
        table = pa.concat_tables([pq.read_table(str(f), columns=wanted).replace_schema_metadata(None)
                                  for f in source.files])
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        raise DataError(f"{path}: cannot read its columns {wanted or 'all'} ({exc})") from exc
    return _to_embeddings(table, source.meta)


def _to_embeddings(table: pa.Table, meta: dict[str, Any]) -> Embeddings:
    vectors, labels = {}, {}
    for name in table.column_names:
        col = table.column(name)
        if name == "id":
            continue
        if pa.types.is_fixed_size_list(col.type):
            vectors[name] = _vector_array(col)
        else:
            labels[name] = col.to_numpy(zero_copy_only=False)
    return Embeddings([str(i) for i in table.column("id").to_pylist()], vectors, labels, meta)


def _vector_array(col: pa.ChunkedArray) -> np.ndarray:
    """A fixed-size-list column as float32 ``(n, d)``, or ``(n, tokens, width)`` for token
    embeddings (a fixed-size list of fixed-size lists: ``embed --pool none``)."""
    shape, values, kind = [len(col)], col.combine_chunks(), col.type
    while pa.types.is_fixed_size_list(kind):
        shape.append(kind.list_size)
        values, kind = values.flatten(), kind.value_type
    return values.to_numpy(zero_copy_only=False).reshape(shape).astype(np.float32, copy=False)


def _manifest_parts(path: Path) -> tuple[list[Path], dict[str, Any]]:
    manifest_path = path / MANIFEST_NAME
    if not manifest_path.is_file():
        raise DataError(f"{path}: no {MANIFEST_NAME}: an unfinished partitioned embedding (rerun "
                        "`astropt embed` to finish it) or not an embeddings folder")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = [path / p["file"] for p in manifest["parts"]]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise DataError(f"{manifest_path}: not a valid embeddings manifest ({exc})") from None
    if not files:
        raise DataError(f"{manifest_path}: lists no parts")
    return files, manifest
