"""NumPy: one ``.npy`` array with one row per object, or an ``.npz`` with named arrays
(images, ids, labels). Folders of one ``.npy`` per object are read by
:mod:`astropt.data.sources.files`.

``.npy`` files are memory-mapped; ``.npz`` arrays are loaded once per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from astropt.data.sources.base import Source, SourceConfig, describe, limited
from astropt.data.sources.preprocess import finish_record
from astropt.errors import DataError, ObjectError

IMAGE_KEYS = ("image", "images", "x", "arr_0")


class NumpySource(Source):
    """Rows of a ``.npy`` array or of the arrays of an ``.npz`` file."""

    def __init__(self, config: SourceConfig):
        super().__init__(config)
        self.path = Path(config.path)
        try:
            if self.path.suffix == ".npz":
                with np.load(self.path, allow_pickle=False) as npz:
                    arrays = {k: npz[k] for k in npz.files}
            else:
                arrays = {"arr_0": np.load(self.path, mmap_mode="r", allow_pickle=False)}
        except Exception as exc:  # noqa: BLE001 - numpy raises ValueError/OSError/EOFError/...
            raise DataError(f"{self.path}: not a readable NumPy file ({describe(exc)})") from exc
        self.columns = self._resolve_columns(arrays)
        first = arrays[next(iter(self.columns))]
        if first.ndim < 2:
            raise DataError(f"{self.path}: expected one row per object, got an array of shape {first.shape}")
        self.n = first.shape[0]
        for key in list(self.columns) + ([config.id_column] if config.id_column in arrays else []):
            if arrays[key].shape[:1] != (self.n,):
                raise DataError(f"{self.path}: array {key!r} has shape {arrays[key].shape}, expected {self.n} rows")
        self.ids = [str(v) for v in arrays[config.id_column]] if config.id_column in arrays else None
        self.labels = self._resolve_labels(arrays)
        self.arrays = {k: arrays[k] for k in list(self.columns) + self.labels}

    def _resolve_columns(self, arrays: dict[str, np.ndarray]) -> dict[str, str]:
        cfg = self.config
        if cfg.columns:
            missing = [k for k in cfg.columns if k not in arrays]
            if missing:
                raise DataError(f"{self.path}: no array {missing}; arrays are {sorted(arrays)}")
            return dict(cfg.columns)
        for key in IMAGE_KEYS:
            if key in arrays:
                return {key: cfg.field}
        raise DataError(f"{self.path}: which array holds the images ({sorted(arrays)})? set source.columns")

    def _resolve_labels(self, arrays: dict[str, np.ndarray]) -> list[str]:
        cfg = self.config
        if cfg.label_columns is not None:
            missing = [k for k in cfg.label_columns if k not in arrays]
            if missing:
                raise DataError(f"{self.path}: no label array {missing}; arrays are {sorted(arrays)}")
            return list(cfg.label_columns)
        skip = set(self.columns) | {cfg.id_column}
        return [k for k, a in arrays.items() if k not in skip and a.shape == (self.n,)]

    def __len__(self) -> int:
        return limited(self.n, self.config)

    def read(self, index: int) -> dict[str, Any]:
        obj_id = self.ids[index] if self.ids is not None else str(index)
        try:
            arrays = {dst: self.arrays[src][index] for src, dst in self.columns.items()}
            labels = {k: self.arrays[k][index] for k in self.labels}
            return finish_record(obj_id, arrays, labels, self.config)
        except Exception as exc:  # noqa: BLE001 - reader boundary: name the object
            raise ObjectError(obj_id, f"{self.path}[{index}]", describe(exc)) from exc

    def describe(self) -> dict[str, Any]:
        return {"kind": "numpy", "path": str(self.path), "columns": self.columns, "objects": len(self)}
