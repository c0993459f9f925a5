"""What every source shares: its typed config, the per-object error and the Source base class.

A source is an iterable of Observation records ``{"id": str, field: np.ndarray, ...,
"labels": {name: value}}`` built from a :class:`SourceConfig`. Random-access sources
(folders of files, HDF5, NumPy, local Hugging Face datasets, catalogues) implement
``read(i)``; streamed sources (a Hugging Face hub id) implement ``results()`` only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from dataclasses import field as _field
from pathlib import Path
from typing import Any, Literal

from astropt.errors import BadArray, ConfigError, DataError, ObjectError  # noqa: F401  (re-exported)
from astropt.fingerprint import digest, tree_stamps

LABEL_TYPES = ("float64", "int64", "string")
SourceKind = Literal["auto", "fits", "image", "hdf5", "numpy", "hf", "catalog", "cutouts"]


@dataclass
class SourceConfig:
    """Where observations come from and how raw arrays become records."""

    path: str = ""
    """File, folder, catalogue table, Hugging Face ``save_to_disk`` folder, Parquet file(s)
    or hub id (``hf`` kind)."""
    kind: SourceKind = "auto"
    """Reader to use; ``auto`` guesses it from the path."""
    field: str = "image"
    """Record key of the image array (the one that is cropped, band-selected, stretched)."""
    # --- FITS
    hdus: list[int | str] = _field(default_factory=list)
    """FITS HDUs to read, by index or EXTNAME: none = the first HDU with data; several =
    stacked as bands (one extension per band)."""
    band_pattern: str = ""
    """One file per band per object: a file name pattern such as ``{id}_{band}.fits``,
    with ``bands`` listing the band names in channel order."""
    flux_column: str = "flux"
    """Spectra in FITS binary tables: flux column."""
    wavelength_column: str = "wavelength"
    """Spectra: wavelength column (a column named ``loglam`` is read as log10 of Angstrom)."""
    ivar_column: str = "ivar"
    """Spectra: inverse-variance column (optional; skipped when the table has none)."""
    # --- arrays (HDF5, NumPy, Hugging Face, catalogue)
    columns: dict[str, str] = _field(default_factory=dict)
    """Source column/dataset/key -> record field, e.g. ``{"images": "image"}``; for a
    catalogue, path columns -> field. Empty: guessed (``image``/``images``/``path``...)."""
    id_column: str = "id"
    """Column/dataset holding object ids (row numbers are used when it is absent)."""
    label_columns: list[str] | None = None
    """Label columns to keep; ``None``: every scalar column that is not an id or array."""
    label_types: dict[str, str] = _field(default_factory=dict)
    """Label name -> ``float64``/``int64``/``string``; labels not named here are typed by
    the majority of their values (cells that do not fit are stored as missing and reported)."""
    layout: Literal["auto", "chw", "hwc"] = "auto"
    """Axis order of 3-D image arrays: ``auto`` treats a last axis of <= 4 as channels."""
    hwc_to_chw: Literal["transpose", "swapaxes"] = "transpose"
    """How channel-last images become ``(C, H, W)``: ``transpose`` keeps rows and columns;
    ``swapaxes`` (``np.swapaxes(x, 0, 2)``: ``(C, W, H)``) reproduces the reference's
    Hugging Face galaxy datasets (legacy)."""
    # --- cutouts by sky position (``path`` is then the catalogue of positions)
    images: str = ""
    """Glob of FITS tiles with a WCS to cut stamps from (``{band}`` stands for each of
    ``bands``); set, it makes the source a ``cutouts`` source of ``image_size`` stamps."""
    ra_column: str = "ra"
    """Catalogue column of right ascension (degrees)."""
    dec_column: str = "dec"
    """Catalogue column of declination (degrees)."""
    split: str = "train"
    """Hugging Face split."""
    streaming: bool = False
    """Read a local dataset in order as a stream (hub ids are always streamed)."""
    # --- image preprocessing (applied before the per-patch normalisation)
    image_size: int = 0
    """Crop/pad images around the centre to this size (0: keep the native size)."""
    pad_value: float = 0.0
    """Value of padded pixels."""
    bands: list[str] = _field(default_factory=list)
    """Band names in channel order (``band_pattern`` files; recorded in the manifest)."""
    channels: list[int] = _field(default_factory=list)
    """Select/reorder channels by index after reading (empty: keep all)."""
    n_bands: int = 0
    """Expected number of bands after selection (0: no check)."""
    stretch: Literal["none", "asinh", "log"] = "none"
    """Intensity stretch applied when preparing."""
    stretch_scale: float = 1.0
    """Softening scale of the stretch: ``asinh(x / scale)``, ``log1p(x / scale)``."""
    limit: int = 0
    """Read at most this many objects (0: all)."""

    def __post_init__(self) -> None:
        if self.image_size < 0:
            raise ConfigError(f"source.image_size must be >= 0, got {self.image_size}")
        if self.stretch_scale <= 0:
            raise ConfigError(f"source.stretch_scale must be positive, got {self.stretch_scale}")
        if self.band_pattern and ("{id}" not in self.band_pattern or "{band}" not in self.band_pattern):
            raise ConfigError(
                f"source.band_pattern {self.band_pattern!r} must contain {{id}} and {{band}}"
            )
        if self.band_pattern and not self.bands:
            raise ConfigError("source.band_pattern needs source.bands (the band names, in order)")
        if any(c < 0 for c in self.channels):
            raise ConfigError(f"source.channels must be >= 0, got {self.channels}")
        if self.limit < 0:
            raise ConfigError(f"source.limit must be >= 0, got {self.limit}")
        bad = {k: v for k, v in self.label_types.items() if v not in LABEL_TYPES}
        if bad:
            raise ConfigError(f"source.label_types {bad}: each type must be one of {list(LABEL_TYPES)}")


def describe(exc: BaseException) -> str:
    """A one-line reason from an exception: its message (with the type, for library ones)."""
    if isinstance(exc, (BadArray, ObjectError)):
        return exc.reason if isinstance(exc, ObjectError) else str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


Result = dict[str, Any] | ObjectError


class Source:
    """Base class: an iterable of Observation records with a length where known."""

    random_access = True

    def __init__(self, config: SourceConfig):
        self.config = config

    def __len__(self) -> int:
        raise NotImplementedError

    def read(self, index: int) -> dict[str, Any]:
        """Record ``index`` (raises :class:`ObjectError` when it cannot be read)."""
        raise NotImplementedError

    def results(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Result]]:
        """``(index, record or ObjectError)`` for objects ``start..stop`` in order."""
        stop = len(self) if stop is None else min(stop, len(self))
        for i in range(start, stop):
            try:
                yield i, self.read(i)
            except ObjectError as exc:
                yield i, exc

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _, result in self.results():
            if isinstance(result, ObjectError):
                raise result
            yield result

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not self.random_access:
            raise TypeError(f"{type(self).__name__} is streamed: iterate over it instead")
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"object {index} out of range for {n} objects")
        return self.read(index % n)

    def describe(self) -> dict[str, Any]:
        """What this source is, for the manifest."""
        return {"kind": self.kind_name, "path": self.config.path}

    def fingerprint(self, start: int, stop: int | None) -> str:
        """A digest of the inputs of objects ``start..stop`` (a resume redoes a range whose
        fingerprint changed). Here: sizes and times of every file of a local source."""
        path = Path(self.config.path).expanduser()
        return digest(tree_stamps(path) if path.exists() else self.config.path, start, stop)

    @property
    def kind_name(self) -> str:
        return type(self).__name__


def limited(n: int, config: SourceConfig) -> int:
    """Apply ``config.limit`` to a count."""
    return min(n, config.limit) if config.limit else n


def require_path(path: str | os.PathLike, what: str) -> Path:
    """The path, or a DataError naming it when it does not exist."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"{what} {p} does not exist")
    return p
