"""FITS via astropy: image cutouts (2-D, ``(bands, H, W)`` cubes, one extension per band,
one file per band) and spectra from binary tables.

astropy applies ``BSCALE``/``BZERO`` when it reads image data; the ``astype(float32)`` in
preprocessing turns FITS's big-endian bytes into native floats.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from astropt.data.sources.base import SourceConfig
from astropt.errors import BadArray

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def is_fits(path: str | Path) -> bool:
    return str(path).lower().endswith(FITS_SUFFIXES)


def fits_stem(path: str | Path) -> str:
    """File name without its FITS suffix(es): ``a.fits.gz`` -> ``a``."""
    name = Path(path).name
    for suffix in sorted(FITS_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(path).stem


def _open(path: Path) -> fits.HDUList:
    # Truncation is only a warning in astropy; for us it is a broken file.
    with warnings.catch_warnings():
        warnings.simplefilter("error", AstropyUserWarning)
        hdul = fits.open(path, memmap=False, lazy_load_hdus=False)
    return hdul


def _select_hdu(hdul: fits.HDUList, key: int | str | None) -> Any:
    if key is None:
        for hdu in hdul:
            if hdu.data is not None and np.size(hdu.data) > 0:
                return hdu
        raise BadArray("no HDU holds data (all HDUs are empty)")
    try:
        hdu = hdul[key]
    except (KeyError, IndexError):
        names = [h.name or str(i) for i, h in enumerate(hdul)]
        raise BadArray(f"no HDU {key!r}; the file has {names}") from None
    if hdu.data is None:
        raise BadArray(f"HDU {key!r} is empty")
    return hdu


def _hdu_keys(cfg: SourceConfig) -> list[int | str | None]:
    """HDUs to read; strings of digits are indices (CLI and YAML give strings)."""
    if not cfg.hdus:
        return [None]
    return [int(k) if isinstance(k, str) and k.isdigit() else k for k in cfg.hdus]


def read_fits(paths: list[Path], field: str, cfg: SourceConfig) -> dict[str, np.ndarray]:
    """Raw arrays of one object from its FITS file(s).

    Several files (one per band) or several HDUs are stacked as bands; a binary table HDU
    gives a spectrum ``field``, ``field_wavelength`` and (if present) ``field_ivar``.
    """
    planes: list[np.ndarray] = []
    for path in paths:
        with _open(path) as hdul:
            hdul.verify("silentfix+ignore")
            for key in _hdu_keys(cfg):
                hdu = _select_hdu(hdul, key)
                if isinstance(hdu, (fits.BinTableHDU, fits.TableHDU)):
                    if len(paths) > 1 or len(cfg.hdus) > 1:
                        raise BadArray("cannot stack a table HDU as an image band")
                    return read_spectrum_table(hdu, field, cfg)
                planes.append(np.asarray(hdu.data, dtype=np.float32))
    if len(planes) == 1:
        return {field: planes[0]}
    shapes = {p.shape for p in planes}
    if len(shapes) != 1 or planes[0].ndim != 2:
        raise BadArray(f"band images must all be 2-D and the same shape, got {sorted(shapes)}")
    return {field: np.stack(planes)}


def read_spectrum_table(hdu: Any, field: str, cfg: SourceConfig) -> dict[str, np.ndarray]:
    """A spectrum from a binary table: one row per sample, or one row holding arrays."""
    data = hdu.data
    field = "spectrum" if field == "image" else field  # a table under the default field
    names = {n.lower(): n for n in data.columns.names}

    def column(name: str) -> np.ndarray:
        values = np.asarray(data[names[name.lower()]], dtype=np.float64)
        return values.reshape(-1) if len(data) == 1 or values.ndim > 1 else values

    if cfg.flux_column.lower() not in names:
        raise BadArray(f"table has no flux column {cfg.flux_column!r}; columns are {data.columns.names}")
    if cfg.wavelength_column.lower() not in names:
        raise BadArray(
            f"table has no wavelength column {cfg.wavelength_column!r}; columns are {data.columns.names}"
        )
    out = {field: column(cfg.flux_column)}
    wavelength = column(cfg.wavelength_column)
    if cfg.wavelength_column.lower() == "loglam":  # SDSS: log10(wavelength / Angstrom)
        wavelength = 10.0**wavelength
    out[f"{field}_wavelength"] = wavelength
    if cfg.ivar_column and cfg.ivar_column.lower() in names:
        out[f"{field}_ivar"] = column(cfg.ivar_column)
    sizes = {k: v.size for k, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise BadArray(f"spectrum columns differ in length: {sizes}")
    return {k: v.astype(np.float32) for k, v in out.items()}


def band_files(folder: Path, cfg: SourceConfig) -> list[tuple[str, list[Path]]]:
    """Objects of a folder with one file per band: ``(id, [file per band])`` sorted by id.

    Ids come from the files of the first band; a missing band file is found when the object
    is read (and reported then), not here.
    """
    prefix, suffix = (part.replace("{band}", cfg.bands[0]) for part in cfg.band_pattern.split("{id}", 1))
    regex = re.compile(f"^{re.escape(prefix)}(?P<id>.+){re.escape(suffix)}$")
    ids = sorted(m.group("id") for p in folder.iterdir() if (m := regex.match(p.name)))
    return [
        (i, [folder / cfg.band_pattern.format(id=i, band=b) for b in cfg.bands]) for i in ids
    ]
