"""HDF5 via h5py: one named dataset with one row per object, optional id and label datasets.

Layout of a typical file::

    images   (N, C, H, W) or (N, H, W) or (N, H, W, C)
    id       (N,) strings or integers        (optional)
    redshift (N,)  ...                        (labels: any other 1-D dataset of length N)

The file is opened lazily in each process (h5py handles do not survive pickling).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py

from astropt.data.sources.base import Source, SourceConfig, describe, limited
from astropt.data.sources.preprocess import finish_record
from astropt.errors import DataError, ObjectError

IMAGE_NAMES = ("image", "images", "cutouts", "data", "x")


def _decode(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


class HDF5Source(Source):
    """Rows of named datasets of one HDF5 file (see module docstring)."""

    def __init__(self, config: SourceConfig):
        super().__init__(config)
        self.path = Path(config.path)
        try:
            with h5py.File(self.path, "r") as f:
                datasets = {k: (f[k].shape, f[k].dtype) for k in f if isinstance(f[k], h5py.Dataset)}
        except Exception as exc:  # noqa: BLE001 - h5py raises OSError/KeyError/... on bad files
            raise DataError(f"{self.path}: not a readable HDF5 file ({describe(exc)})") from exc
        self.columns = self._resolve_columns(datasets)
        first = next(iter(self.columns))
        self.n = datasets[first][0][0] if datasets[first][0] else 0
        for name in self.columns:
            if not datasets[name][0] or datasets[name][0][0] != self.n:
                raise DataError(f"{self.path}: dataset {name!r} has {datasets[name][0]} rows, expected {self.n}")
        self.id_name = config.id_column if config.id_column in datasets else None
        self.labels = self._resolve_labels(datasets)
        self._file: h5py.File | None = None
        self._ids: list[str] | None = None

    def _resolve_columns(self, datasets: dict[str, Any]) -> dict[str, str]:
        cfg = self.config
        if cfg.columns:
            missing = [k for k in cfg.columns if k not in datasets]
            if missing:
                raise DataError(f"{self.path}: no dataset {missing}; datasets are {sorted(datasets)}")
            return dict(cfg.columns)
        for name in IMAGE_NAMES:
            if name in datasets:
                return {name: cfg.field}
        big = [k for k, (shape, _) in datasets.items() if len(shape) >= 3]
        if len(big) == 1:
            return {big[0]: cfg.field}
        raise DataError(
            f"{self.path}: cannot tell which dataset holds the images ({sorted(datasets)}); "
            "set source.columns, e.g. {'images': 'image'}"
        )

    def _resolve_labels(self, datasets: dict[str, Any]) -> list[str]:
        cfg = self.config
        if cfg.label_columns is not None:
            missing = [k for k in cfg.label_columns if k not in datasets]
            if missing:
                raise DataError(f"{self.path}: no label dataset {missing}; datasets are {sorted(datasets)}")
            return list(cfg.label_columns)
        skip = set(self.columns) | {cfg.id_column}
        return [k for k, (shape, _) in datasets.items() if k not in skip and shape == (self.n,)]

    def _handle(self) -> h5py.File:
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_file"] = None
        return state

    def __len__(self) -> int:
        return limited(self.n, self.config)

    def object_id(self, index: int) -> str:
        if self.id_name is None:
            return str(index)
        if self._ids is None:
            self._ids = [str(_decode(v)) for v in self._handle()[self.id_name][:]]
        return self._ids[index]

    def read(self, index: int) -> dict[str, Any]:
        obj_id = str(index)
        try:
            obj_id = self.object_id(index)
            f = self._handle()
            arrays = {dst: f[src][index] for src, dst in self.columns.items()}
            labels = {k: _decode(f[k][index]) for k in self.labels}
            return finish_record(obj_id, arrays, labels, self.config)
        except ObjectError:
            raise
        except Exception as exc:  # noqa: BLE001 - reader boundary: name the object
            raise ObjectError(obj_id, f"{self.path}[{index}]", describe(exc)) from exc

    def describe(self) -> dict[str, Any]:
        return {"kind": "hdf5", "path": str(self.path), "columns": self.columns, "objects": len(self)}
