"""``astropt data cutouts|crossmatch``: survey-scale input by sky position."""

from __future__ import annotations

import argparse
import json


def register(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser(
        "cutouts",
        help="cut stamps at catalogue positions from WCS image tiles into prepared shards",
        description="For each catalogue row (RA, Dec in degrees), cut a SIZE-pixel stamp per band "
        "from a tile whose footprint holds it (astropy Cutout2D); rows off every tile, too near an "
        "edge or missing a band are rejected with the reason (rejects.csv).",
    )
    p.add_argument("catalog", help="CSV/Parquet catalogue with RA/Dec columns (degrees)")
    p.add_argument("--images", required=True, help="glob of FITS tiles; {band} stands for each band")
    p.add_argument("--size", type=int, required=True, help="stamp side in pixels")
    p.add_argument("--bands", nargs="+", default=[], help="band names in channel order (with {band})")
    p.add_argument("--out", required=True, help="prepared folder to write (resumed if it exists)")
    p.add_argument("--ra-column", default="ra")
    p.add_argument("--dec-column", default="dec")
    p.add_argument("--id-column", default="id")
    p.add_argument("--labels", nargs="*", help="label columns to keep (default: every numeric column)")
    p.add_argument("--workers", type=int, default=1, help="processes cutting stamps in parallel")
    p.add_argument("--rows-per-shard", type=int, default=512)
    p.add_argument("--on-error", choices=["raise", "skip"], default="skip")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_cutouts)

    p = data_sub.add_parser("crossmatch", help="join two catalogues by sky position")
    p.add_argument("left", help="CSV/Parquet catalogue (every row is kept in the report)")
    p.add_argument("right", help="CSV/Parquet catalogue whose nearest row within --radius is joined")
    p.add_argument("--radius", default="1arcsec", help="match radius with a unit, e.g. 1arcsec, 0.5arcsec")
    p.add_argument("--out", required=True, help="joined table (.parquet or .csv)")
    p.add_argument("--left-ra", default="ra")
    p.add_argument("--left-dec", default="dec")
    p.add_argument("--right-ra", default="ra")
    p.add_argument("--right-dec", default="dec")
    p.add_argument("--keep-unmatched", action="store_true", help="keep unmatched left rows (nulls)")
    p.set_defaults(func=run_crossmatch)


def run_cutouts(args: argparse.Namespace) -> int:
    from astropt.data.prepare import format_info, info, prepare
    from astropt.data.sources import SourceConfig

    cfg = SourceConfig(path=args.catalog, kind="cutouts", images=args.images, image_size=args.size,
                       bands=list(args.bands), ra_column=args.ra_column, dec_column=args.dec_column,
                       id_column=args.id_column, label_columns=args.labels)
    manifest = prepare(cfg, args.out, rows_per_shard=args.rows_per_shard, workers=args.workers,
                       on_error=args.on_error, progress=not args.no_progress)
    print(format_info(info(args.out)))
    if manifest.rejects:
        print(f"\n{manifest.rejects} rows rejected; reasons in {args.out}/rejects.csv")
    return 0


def run_crossmatch(args: argparse.Namespace) -> int:
    from astropt.data.crossmatch import crossmatch

    report = crossmatch(args.left, args.right, args.out, radius=args.radius,
                        left_radec=(args.left_ra, args.left_dec), right_radec=(args.right_ra, args.right_dec),
                        keep_unmatched=args.keep_unmatched)
    print(json.dumps(report, indent=2))
    return 0
