"""Join two catalogues by sky position, so that labels from one survey can be attached to
another's images (astropy ``SkyCoord.match_to_catalog_sky`` / ``search_around_sky``).

Each left row gets its nearest right row within the radius; the report counts the
unmatched left rows and the left rows with several right rows inside the radius (the nearest
is joined; ``n_within`` says how many there were), and right rows matched by more than one
left row.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from astropt.atomic import atomic_path
from astropt.data.shards import DataError
from astropt.data.sources.catalog import read_table

log = logging.getLogger(__name__)


def _coords(table: pa.Table, ra: str, dec: str, where: Path):
    from astropy.coordinates import SkyCoord

    for col in (ra, dec):
        if col not in table.column_names:
            raise DataError(f"{where}: no column {col!r} (degrees); columns are {table.column_names}")
    ra_v = np.asarray(table[ra].to_numpy(zero_copy_only=False), dtype=np.float64)
    dec_v = np.asarray(table[dec].to_numpy(zero_copy_only=False), dtype=np.float64)
    bad = ~(np.isfinite(ra_v) & np.isfinite(dec_v)) | (np.abs(dec_v) > 90)
    if bad.any():
        raise DataError(f"{where}: {int(bad.sum())} rows with missing or impossible RA/Dec (first: row "
                        f"{int(np.flatnonzero(bad)[0])})")
    return SkyCoord(ra_v, dec_v, unit="deg")


def parse_radius(text: str | float):
    """``1arcsec`` / ``0.5 arcsec`` / ``2e-4deg`` -> an astropy angle (a bare number: arcsec)."""
    import astropy.units as u

    try:
        try:
            angle = float(text) * u.arcsec
        except (TypeError, ValueError):
            angle = u.Quantity(text).to(u.arcsec)
    except (ValueError, TypeError, u.UnitsError) as exc:
        raise DataError(f"radius {text!r} is not an angle (e.g. 1arcsec): {exc}") from None
    if angle.value <= 0:
        raise DataError(f"radius must be positive, got {text!r}")
    return angle


def crossmatch(
    left: str | os.PathLike,
    right: str | os.PathLike,
    out: str | os.PathLike,
    radius: str | float = "1arcsec",
    left_radec: tuple[str, str] = ("ra", "dec"),
    right_radec: tuple[str, str] = ("ra", "dec"),
    keep_unmatched: bool = False,
) -> dict[str, Any]:
    """Write ``out`` (Parquet or CSV): the left rows with their nearest right row within
    ``radius`` (right columns prefixed ``right_``), ``sep_arcsec`` and ``n_within``.

    Returns the report: counts of matched, unmatched and multiply-matched rows.
    """
    from astropy.coordinates import search_around_sky

    left, right, out = Path(left), Path(right), Path(out)
    a, b = read_table(left), read_table(right)
    ca, cb = _coords(a, *left_radec, left), _coords(b, *right_radec, right)
    angle = parse_radius(radius)
    idx, sep, _ = ca.match_to_catalog_sky(cb)
    matched = sep.arcsec <= angle.value
    ia, _, _, _ = search_around_sky(ca, cb, angle)
    n_within = np.bincount(ia, minlength=len(a))
    rows = np.flatnonzero(matched) if not keep_unmatched else np.arange(len(a))
    joined = a.take(pa.array(rows))
    right_rows = b.take(pa.array(idx[rows]))
    for name in b.column_names:
        col = right_rows[name]
        if keep_unmatched:
            col = pa.array([v if m else None for v, m in zip(col.to_pylist(), matched[rows], strict=True)], type=col.type)
        joined = joined.append_column(f"right_{name}", col)
    joined = joined.append_column("sep_arcsec", pa.array(np.where(matched[rows], sep.arcsec[rows], np.nan)))
    joined = joined.append_column("n_within", pa.array(n_within[rows]))
    with atomic_path(out) as tmp:
        if out.suffix.lower() == ".csv":
            pa_csv.write_csv(joined, str(tmp))
        else:
            pq.write_table(joined, str(tmp))
    used = idx[matched]
    report = {
        "left_rows": len(a), "right_rows": len(b), "radius_arcsec": float(angle.value),
        "matched": int(matched.sum()), "unmatched": int((~matched).sum()),
        "left_with_several_within_radius": int((n_within > 1).sum()),
        "right_matched_by_several": int((np.bincount(used, minlength=len(b)) > 1).sum()),
        "out": str(out),
    }
    log.info("crossmatch: %s", report)
    return report
