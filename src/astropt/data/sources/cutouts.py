"""Cutouts by sky position: a catalogue of (RA, Dec) + survey image tiles with a WCS -> one
stamp per band per object (astropy's ``Cutout2D``, WCS carried along).

``source.path`` is the catalogue (CSV/Parquet; ``ra_column``/``dec_column`` in degrees,
``id_column``, label columns as for any catalogue); ``source.images`` a glob of FITS tiles,
with ``{band}`` standing for each of ``source.bands`` (``tiles/*_{band}.fits``), or one band
when it has no ``{band}``. Each object's stamp in a band is cut from a tile whose footprint
holds the whole stamp; an object off every footprint, or covered only too near an edge for
a full stamp, or missing a band, is rejected with that reason. Tiles are opened lazily and
memory-mapped, once per process (``prepare --workers N`` runs processes in parallel).
"""

from __future__ import annotations

import glob
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from astropt.data.shards import DataError
from astropt.data.sources.base import (
    BadArray,
    ObjectError,
    Source,
    SourceConfig,
    limited,
    require_path,
)
from astropt.data.sources.catalog import read_table

log = logging.getLogger(__name__)


@dataclass
class Tile:
    """One FITS image with its WCS (header only until a stamp is cut)."""

    path: Path
    wcs: Any
    shape: tuple[int, int]  # (ny, nx)


def _read_tile(path: Path) -> Tile:
    from astropy.io import fits
    from astropy.wcs import WCS, FITSFixedWarning

    try:
        with fits.open(path, memmap=True) as hdul:
            hdu = next((h for h in hdul if getattr(h, "data", None) is not None and h.header.get("NAXIS") == 2), None)
            if hdu is None:
                raise DataError(f"{path}: no 2-D image HDU")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FITSFixedWarning)
                wcs = WCS(hdu.header).celestial
            shape = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
    except OSError as exc:
        raise DataError(f"{path}: unreadable FITS tile ({exc})") from exc
    if not wcs.has_celestial:
        raise DataError(f"{path}: the tile has no celestial WCS")
    return Tile(path, wcs, shape)


def find_tiles(pattern: str, bands: list[str]) -> dict[str, list[Tile]]:
    """Tiles per band for a glob with an optional ``{band}`` placeholder."""
    if not pattern:
        raise DataError("cutouts need source.images: a glob of FITS tiles (e.g. 'tiles/*_{band}.fits')")
    names = bands if "{band}" in pattern else [bands[0] if bands else "band"]
    if "{band}" in pattern and not bands:
        raise DataError(f"source.images {pattern!r} has {{band}} but source.bands is empty")
    out = {}
    for band in names:
        paths = sorted(Path(p) for p in glob.glob(pattern.replace("{band}", band)))
        if not paths:
            raise DataError(f"no tile matches {pattern.replace('{band}', band)!r} (band {band})")
        out[band] = [_read_tile(p) for p in paths]
    return out


def assign_tiles(tiles: list[Tile], ra: np.ndarray, dec: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each position: the first tile holding a full ``size`` stamp around it (-1: none),
    and whether any tile's footprint holds the position at all."""
    chosen = np.full(len(ra), -1, dtype=np.int64)
    inside_any = np.zeros(len(ra), dtype=bool)
    for k, tile in enumerate(tiles):
        x, y = tile.wcs.world_to_pixel_values(ra, dec)
        ny, nx = tile.shape
        inside = np.isfinite(x) & np.isfinite(y) & (x >= -0.5) & (x < nx - 0.5) & (y >= -0.5) & (y < ny - 0.5)
        # Cutout2D's stamp starts at ceil(x - size / 2) (its overlap_slices), so that the
        # position lies within half a pixel of the stamp's centre, (size - 1) / 2.
        lo_x, lo_y = np.ceil(x - size / 2), np.ceil(y - size / 2)
        full = inside & (lo_x >= 0) & (lo_y >= 0) & (lo_x + size <= nx) & (lo_y + size <= ny)
        inside_any |= inside
        chosen = np.where((chosen < 0) & full, k, chosen)
    return chosen, inside_any


class CutoutSource(Source):
    """Stamps cut from WCS tiles at catalogue positions (see module docstring)."""

    def __init__(self, config: SourceConfig):
        super().__init__(config)
        if config.image_size <= 0:
            raise DataError("cutouts need the stamp size: --size / source.image_size > 0")
        path = require_path(config.path, "catalogue")
        table = read_table(path)
        names = table.column_names
        for col in (config.ra_column, config.dec_column):
            if col not in names:
                raise DataError(f"{path}: no column {col!r} (RA/Dec in degrees); columns are {names}")
        self.ra = np.asarray(table[config.ra_column].to_numpy(zero_copy_only=False), dtype=np.float64)
        self.dec = np.asarray(table[config.dec_column].to_numpy(zero_copy_only=False), dtype=np.float64)
        self.ids = ([str(v) for v in table[config.id_column].to_pylist()] if config.id_column in names
                    else [str(i) for i in range(len(table))])
        skip = {config.id_column}
        wanted = config.label_columns if config.label_columns is not None else [c for c in names if c not in skip]
        self.labels = {c: table[c].to_numpy(zero_copy_only=False) for c in wanted
                       if c in names and np.issubdtype(table[c].to_numpy(zero_copy_only=False).dtype, np.number)}
        self.tiles = find_tiles(config.images, list(config.bands))
        self.assigned = {band: assign_tiles(tiles, self.ra, self.dec, config.image_size)
                         for band, tiles in self.tiles.items()}
        self._open: dict[Path, Any] = {}

    def __len__(self) -> int:
        return limited(len(self.ids), self.config)

    def _data(self, tile: Tile) -> np.ndarray:
        if tile.path not in self._open:
            from astropy.io import fits

            hdul = fits.open(tile.path, memmap=True)
            self._open[tile.path] = next(h for h in hdul if getattr(h, "data", None) is not None
                                         and h.header.get("NAXIS") == 2).data
        return self._open[tile.path]

    def read(self, index: int) -> dict[str, Any]:
        from astropy.coordinates import SkyCoord
        from astropy.nddata import Cutout2D, NoOverlapError, PartialOverlapError

        obj_id, cfg = self.ids[index], self.config
        where = f"{cfg.path} row {index}"
        planes = []
        position = SkyCoord(self.ra[index], self.dec[index], unit="deg")
        for band, tiles in self.tiles.items():
            chosen, inside_any = self.assigned[band]
            k = int(chosen[index])
            if k < 0:
                reason = (f"too near the edge of every {band} tile for a {cfg.image_size}-pixel stamp"
                          if inside_any[index] else
                          f"RA {self.ra[index]:.6f}, Dec {self.dec[index]:.6f} is outside every {band} tile")
                raise ObjectError(obj_id, where, reason)
            tile = tiles[k]
            try:
                stamp = Cutout2D(self._data(tile), position, (cfg.image_size, cfg.image_size), wcs=tile.wcs,
                                 mode="strict", copy=True)
            except (NoOverlapError, PartialOverlapError, ValueError) as exc:
                raise ObjectError(obj_id, tile.path, f"cutout failed ({exc})") from None
            planes.append(stamp.data.astype(np.float32))
        image = np.stack(planes)
        if not np.all(np.isfinite(image)):
            raise ObjectError(obj_id, where, f"stamp holds {int(np.sum(~np.isfinite(image)))} non-finite pixels")
        labels = {name: float(values[index]) for name, values in self.labels.items()}
        return {"id": obj_id, cfg.field: image, "labels": labels}

    def describe(self) -> dict[str, Any]:
        return {"kind": "cutouts", "path": self.config.path, "images": self.config.images,
                "bands": list(self.tiles), "n_tiles": {b: len(t) for b, t in self.tiles.items()}}


def stamp_wcs_centre(source: CutoutSource, index: int, band: str | None = None) -> tuple[float, float]:
    """Pixel coordinates (x, y) of the catalogue position in the stamp's own WCS (for checks)."""
    from astropy.coordinates import SkyCoord
    from astropy.nddata import Cutout2D

    band = band or next(iter(source.tiles))
    tile = source.tiles[band][int(source.assigned[band][0][index])]
    position = SkyCoord(source.ra[index], source.dec[index], unit="deg")
    size = source.config.image_size
    stamp = Cutout2D(source._data(tile), position, (size, size), wcs=tile.wcs, mode="strict")
    x, y = stamp.wcs.world_to_pixel(position)
    return float(x), float(y)


__all__ = ["BadArray", "CutoutSource", "assign_tiles", "find_tiles", "stamp_wcs_centre"]
