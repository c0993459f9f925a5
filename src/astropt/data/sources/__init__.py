"""Sources: readers that turn astronomers' files into Observation records.

``open_source(cfg)`` builds the reader named by ``cfg.kind``, or guesses it from the path:

- a folder of FITS files (``fits``), of JPEG/PNG files (``image``), of ``.npy`` files;
- an HDF5 file (``hdf5``), a ``.npy``/``.npz`` array file (``numpy``);
- a Hugging Face ``save_to_disk`` folder, Parquet dataset or hub id (``hf``);
- a CSV/Parquet catalogue of files + labels (``catalog``: a Parquet file whose columns
  include a path column is a catalogue; otherwise it is read as a dataset);
- a catalogue of sky positions + ``images`` (a glob of WCS tiles): stamps cut at each
  position (``cutouts``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pyarrow.parquet as pq

from astropt.data.sources.base import Source, SourceConfig
from astropt.data.sources.catalog import PATH_NAMES, CatalogSource, is_table
from astropt.data.sources.cutouts import CutoutSource
from astropt.data.sources.files import is_npy, open_folder
from astropt.data.sources.fits import is_fits
from astropt.data.sources.hdf5 import HDF5Source
from astropt.data.sources.hf import HUB_ID, HFSource, is_hf_folder
from astropt.data.sources.numpy_source import NumpySource
from astropt.data.sources.raster import is_raster
from astropt.errors import BadArray, DataError, ObjectError

__all__ = ["BadArray", "ObjectError", "Source", "SourceConfig", "detect_kind", "open_source"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".he5")


def _parquet_is_catalog(path: Path, cfg: SourceConfig) -> bool:
    """A Parquet table whose path column(s) hold strings lists files: a catalogue."""
    schema = pq.read_schema(path)
    wanted = [n for n in (cfg.columns or PATH_NAMES) if n in schema.names]
    return bool(wanted) and all(str(schema.field(n).type) in ("string", "large_string") for n in wanted)


def _folder_kind(path: Path) -> str:
    files = [p for p in path.iterdir() if p.is_file()]
    counts = {
        "fits": sum(map(is_fits, files)),
        "image": sum(map(is_raster, files)),
        "numpy": sum(map(is_npy, files)),
    }
    kind, n = max(counts.items(), key=lambda kv: kv[1])
    if n:
        return kind
    if any(p.suffix == ".parquet" for p in path.rglob("*.parquet")):
        return "hf"
    raise DataError(f"{path}: cannot tell what this folder holds (no FITS, JPEG/PNG, NPY or Parquet files)")


def detect_kind(cfg: SourceConfig) -> str:
    """The source kind of ``cfg.path`` (``cfg.kind`` unless it is ``auto``)."""
    if cfg.kind != "auto":
        return cfg.kind
    if cfg.images:
        return "cutouts"
    path = Path(cfg.path).expanduser()
    if not path.exists():
        if HUB_ID.match(cfg.path):
            return "hf"
        raise DataError(f"source {cfg.path} does not exist")
    if path.is_dir():
        return "hf" if is_hf_folder(path) else _folder_kind(path)
    name = path.name.lower()
    if name.endswith(HDF5_SUFFIXES):
        return "hdf5"
    if name.endswith((".npy", ".npz")):
        return "numpy"
    if name.endswith((".parquet", ".pq")):
        return "catalog" if _parquet_is_catalog(path, cfg) else "hf"
    if is_table(path):
        return "catalog"
    if is_fits(path) or is_raster(path):
        raise DataError(f"{path} is a single file; give its folder (or a catalogue listing the files)")
    raise DataError(f"{path}: unknown source type; set source.kind to one of fits|image|hdf5|numpy|hf|catalog")


def open_source(cfg: SourceConfig) -> Source:
    """Build the reader for ``cfg`` (see module docstring)."""
    kind = detect_kind(cfg)
    cfg = replace(cfg, kind=kind)
    path = Path(cfg.path).expanduser()
    if kind in ("fits", "image", "numpy") and path.is_dir():
        return open_folder(cfg, path, kind)
    if kind in ("fits", "image") or (kind == "numpy" and not path.exists()):
        raise DataError(f"source {cfg.path}: a {kind} source must be an existing folder")
    if kind == "numpy":
        return NumpySource(cfg)
    if kind == "hdf5":
        return HDF5Source(cfg)
    if kind == "catalog":
        return CatalogSource(cfg)
    if kind == "cutouts":
        return CutoutSource(cfg)
    return HFSource(cfg)
