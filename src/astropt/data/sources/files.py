"""Sources of one file (or one file per band) per object: folders of FITS/JPEG/PNG/NPY
cutouts, and the base of catalogues.

Which reader opens a file is decided by its extension, so one catalogue may mix FITS
images, JPEG thumbnails and FITS spectra.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from astropt.data.sources.base import Source, SourceConfig, describe, limited
from astropt.data.sources.fits import band_files, fits_stem, is_fits, read_fits
from astropt.data.sources.preprocess import finish_record
from astropt.data.sources.raster import is_raster, read_raster
from astropt.errors import DataError, ObjectError
from astropt.fingerprint import digest, file_stamp

log = logging.getLogger(__name__)

Reader = Callable[[list[Path], str, SourceConfig], dict[str, np.ndarray]]


def read_npy_file(paths: list[Path], field: str, cfg: SourceConfig) -> dict[str, np.ndarray]:
    """One object per ``.npy`` file (or ``.npz``: its arrays under ``cfg.columns`` names)."""
    arrays = []
    for path in paths:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as npz:
                columns = cfg.columns or {k: (field if i == 0 else k) for i, k in enumerate(npz.files)}
                return {dst: np.asarray(npz[src]) for src, dst in columns.items()}
        arrays.append(np.load(path, allow_pickle=False))
    return {field: arrays[0] if len(arrays) == 1 else np.stack(arrays)}


def reader_for(path: Path, cfg: SourceConfig) -> tuple[Reader, str | None]:
    """``(reader, layout)`` for a file: FITS data are ``chw``, Pillow gives ``hwc``."""
    if is_fits(path):
        return read_fits, "chw"
    if is_raster(path):
        return (lambda paths, field, _cfg: read_raster(paths, field)), "hwc"
    if path.suffix in (".npy", ".npz"):
        return read_npy_file, None
    raise DataError(f"{path}: unknown file type (expected FITS, JPEG/PNG/TIFF or .npy/.npz)")


def file_stem(path: Path) -> str:
    return fits_stem(path) if is_fits(path) else path.stem


class FileListSource(Source):
    """Objects listed as ``(id, {field: [files]}, labels)``; each read opens its files."""

    def __init__(self, config: SourceConfig, entries: list[tuple[str, dict[str, list[Path]], dict[str, Any]]]):
        super().__init__(config)
        self.entries = entries[: limited(len(entries), config)]

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> dict[str, Any]:
        obj_id, files, labels = self.entries[index]
        arrays: dict[str, np.ndarray] = {}
        layouts: dict[str, str | None] = {}
        for field, paths in files.items():
            shown = paths[0] if len(paths) == 1 else f"{paths[0].parent}/{{{','.join(p.name for p in paths)}}}"
            try:
                reader, layout = reader_for(paths[0], self.config)
                missing = [p for p in paths if not p.is_file()]
                if missing:
                    raise FileNotFoundError(f"missing file {missing[0]}")
                arrays.update(reader(paths, field, self.config))
                layouts[field] = layout
            except ObjectError:
                raise
            # The reader boundary: any failure of a third-party decoder on a bad file
            # (astropy, Pillow, numpy raise many types) becomes a message naming the object.
            except Exception as exc:  # noqa: BLE001
                raise ObjectError(obj_id, shown, describe(exc)) from exc
        image_files = files.get(self.config.field, next(iter(files.values())))
        try:
            return finish_record(obj_id, arrays, labels, self.config, layouts.get(self.config.field))
        except ValueError as exc:
            raise ObjectError(obj_id, image_files[0], str(exc)) from exc

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind_name, "path": self.config.path, "objects": len(self)}

    def fingerprint(self, start: int, stop: int | None) -> str:
        """Ids, files (size, modification time) and labels of objects ``start..stop``."""
        entries = self.entries[start:stop]
        return digest([(i, {f: [file_stamp(p) for p in paths] for f, paths in files.items()}, labels)
                       for i, files, labels in entries])

    @property
    def kind_name(self) -> str:
        return {"fits": "fits", "image": "image", "numpy": "numpy"}.get(self.config.kind, "files")


def folder_entries(folder: Path, cfg: SourceConfig, accept: Callable[[Path], bool]) -> list[tuple[str, dict[str, list[Path]], dict[str, Any]]]:
    """Objects of a folder: one accepted file per object (id = file stem), sorted by name,
    or, with ``cfg.band_pattern``, one file per band."""
    if cfg.band_pattern:
        listed = band_files(folder, cfg)
    else:
        files = sorted(p for p in folder.iterdir() if p.is_file() and accept(p))
        listed = [(file_stem(p), [p]) for p in files]
    if not listed:
        what = f"files matching {cfg.band_pattern!r}" if cfg.band_pattern else "readable files"
        raise DataError(f"{folder}: no {what} found")
    ids = [i for i, _ in listed]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise DataError(f"{folder}: several files give the same object id, e.g. {dup}")
    return [(i, {cfg.field: paths}, {}) for i, paths in listed]


def is_npy(path: Path) -> bool:
    return path.suffix in (".npy", ".npz")


def open_folder(cfg: SourceConfig, folder: Path, kind: str) -> FileListSource:
    """A folder of FITS (``fits``), JPEG/PNG (``image``) or NPY (``numpy``) files."""
    accept = {"fits": is_fits, "image": is_raster, "numpy": is_npy}[kind]
    return FileListSource(cfg, folder_entries(folder, cfg, accept))
