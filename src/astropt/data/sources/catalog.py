"""Catalogues: a CSV or Parquet table with an id column, path columns and label columns.

Each path column maps to a record field (``source.columns``, e.g. ``{"file": "image",
"spec_file": "spectrum"}``); several columns mapping to one field are stacked as bands
(``{"g_file": "image", "r_file": "image"}``). Relative paths are resolved against the
table's folder. Labels are every other column unless ``source.label_columns`` names them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from astropt.data.sources.base import SourceConfig, describe
from astropt.data.sources.files import FileListSource
from astropt.errors import DataError

PATH_NAMES = ("path", "file", "filename", "file_name", "image_path", "image_file", "cutout")
TABLE_SUFFIXES = (".csv", ".parquet", ".pq", ".tsv")


def is_table(path: str | Path) -> bool:
    return str(path).lower().endswith(TABLE_SUFFIXES)


def read_table(path: Path) -> pa.Table:
    """A CSV/TSV/Parquet table, or a DataError naming the file."""
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            return pq.read_table(path)
        options = pa_csv.ParseOptions(delimiter="\t" if path.suffix.lower() == ".tsv" else ",")
        return pa_csv.read_csv(path, parse_options=options)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: unreadable catalogue ({describe(exc)})") from exc


def _path_columns(table: pa.Table, cfg: SourceConfig, path: Path) -> dict[str, str]:
    names = table.column_names
    if cfg.columns:
        missing = [c for c in cfg.columns if c not in names]
        if missing:
            raise DataError(f"{path}: no path column {missing}; columns are {names}")
        return dict(cfg.columns)
    for name in PATH_NAMES:
        if name in names:
            return {name: cfg.field}
    raise DataError(
        f"{path}: no path column (looked for {list(PATH_NAMES)}); columns are {names}; "
        "set source.columns, e.g. {'my_path': 'image'}"
    )


def _label_columns(table: pa.Table, cfg: SourceConfig, skip: set[str], path: Path) -> list[str]:
    names = table.column_names
    if cfg.label_columns is None:
        return [c for c in names if c not in skip]
    missing = [c for c in cfg.label_columns if c not in names]
    if missing:
        raise DataError(f"{path}: missing label column(s) {missing}; columns are {names}")
    return list(cfg.label_columns)


def catalog_entries(cfg: SourceConfig) -> list[tuple[str, dict[str, list[Path]], dict[str, Any]]]:
    """``(id, {field: [files]}, labels)`` for each row of the catalogue ``cfg.path``."""
    path = Path(cfg.path)
    table = read_table(path)
    if cfg.id_column not in table.column_names:
        raise DataError(f"{path}: no id column {cfg.id_column!r}; columns are {table.column_names}")
    path_columns = _path_columns(table, cfg, path)
    labels = _label_columns(table, cfg, {cfg.id_column, *path_columns}, path)
    data = table.to_pydict()
    ids = [str(v) for v in data[cfg.id_column]]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"{path}: duplicate ids in column {cfg.id_column!r}, e.g. {dup}")
    base = path.parent
    entries = []
    for row, obj_id in enumerate(ids):
        files: dict[str, list[Path]] = {}
        for column, field in path_columns.items():
            value = data[column][row]
            # An empty cell becomes a path that does not exist: reported when read.
            file = Path(str(value or f"<empty {column}>")).expanduser()
            files.setdefault(field, []).append(file if file.is_absolute() else base / file)
        entries.append((obj_id, files, {k: data[k][row] for k in labels}))
    return entries


class CatalogSource(FileListSource):
    """The objects of a catalogue table (see module docstring)."""

    def __init__(self, config: SourceConfig):
        super().__init__(config, catalog_entries(config))

    @property
    def kind_name(self) -> str:
        return "catalog"
