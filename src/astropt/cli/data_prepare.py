"""``astropt data prepare|info|show``: sources -> prepared shards, and a look at them."""

from __future__ import annotations

import argparse
import json

from astropt.config import apply_overrides, from_dict, read_file


def register(data_sub: argparse._SubParsersAction) -> None:
    p = data_sub.add_parser(
        "prepare",
        help="convert FITS/JPEG/PNG/HDF5/NumPy/HF datasets/catalogues into prepared shards",
        description="Read SOURCE (a folder of cutouts, an .h5/.npy/.npz file, a Hugging Face "
        "folder, Parquet file or hub id, or a CSV/Parquet catalogue) and write prepared shards.",
    )
    p.add_argument("source", help="path or Hugging Face hub id")
    p.add_argument("--out", required=True, help="prepared folder to write (resumed if it exists)")
    p.add_argument("--config", help="YAML/TOML file with source settings (a mapping, or under 'source')")
    p.add_argument("--kind", choices=["auto", "fits", "image", "hdf5", "numpy", "hf", "catalog"])
    p.add_argument("--hdu", action="append", dest="hdus", help="FITS HDU index or name (repeat: stacked as bands)")
    p.add_argument("--band-pattern", help="one file per band, e.g. '{id}_{band}.fits'")
    p.add_argument("--bands", nargs="+", help="band names in channel order")
    p.add_argument("--channels", nargs="+", type=int, help="select/reorder channels by index")
    p.add_argument("--n-bands", type=int, help="expected number of bands (others are rejected)")
    p.add_argument("--image-size", type=int, help="centre crop/pad images to this size")
    p.add_argument("--stretch", choices=["none", "asinh", "log"])
    p.add_argument("--columns", nargs="+", metavar="COLUMN=FIELD", help="source column -> record field")
    p.add_argument("--labels", nargs="*", help="label columns to keep (default: all scalar columns)")
    p.add_argument("--id-column", help="column of object ids")
    p.add_argument("--split", help="Hugging Face split")
    p.add_argument("--layout", choices=["auto", "chw", "hwc"])
    p.add_argument("--hwc-to-chw", choices=["transpose", "swapaxes"], help="swapaxes: legacy HF convention")
    p.add_argument("--limit", type=int, help="read at most this many objects")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any source setting")
    p.add_argument("--rows-per-shard", type=int, default=512)
    p.add_argument("--workers", type=int, default=1, help="processes writing shards")
    p.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    p.add_argument("--overwrite", action="store_true", help="discard a previous preparation in --out")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_prepare)

    p = data_sub.add_parser("info", help="show the manifest and a summary of a prepared folder")
    p.add_argument("directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON only")
    p.set_defaults(func=run_info)

    p = data_sub.add_parser("show", help="write a PNG grid of objects of a prepared folder")
    p.add_argument("directory")
    p.add_argument("--ids", nargs="+", help="object ids (default: the first 16)")
    p.add_argument("--out", default="grid.png")
    p.add_argument("--field", default="image")
    p.add_argument("--label", default="", help="label printed under each id")
    p.add_argument("--columns", type=int, default=0)
    p.set_defaults(func=run_show)


FLAG_KEYS = [
    "kind", "hdus", "band_pattern", "bands", "channels", "n_bands", "image_size", "stretch",
    "id_column", "split", "layout", "hwc_to_chw", "limit",
]  # fmt: skip


def source_config(args: argparse.Namespace):
    """SourceConfig from --config, then the flags, then --set overrides."""
    from astropt.data.sources import SourceConfig

    data = {}
    if args.config:
        data = read_file(args.config)
        data = data.get("source", data)
    data["path"] = args.source
    data.update({k: getattr(args, k) for k in FLAG_KEYS if getattr(args, k) is not None})
    if args.columns:
        data["columns"] = dict(item.split("=", 1) for item in args.columns)
    if args.labels is not None:
        data["label_columns"] = args.labels
    return from_dict(SourceConfig, apply_overrides(data, args.set))


def run_prepare(args: argparse.Namespace) -> int:
    from astropt.data.prepare import format_info, info, prepare

    manifest = prepare(
        source_config(args),
        args.out,
        rows_per_shard=args.rows_per_shard,
        workers=args.workers,
        on_error=args.on_error,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(format_info(info(args.out)))
    if manifest.rejects:
        print(f"\n{manifest.rejects} objects rejected; reasons in {args.out}/rejects.csv")
    return 0


def run_info(args: argparse.Namespace) -> int:
    from astropt.data.prepare import format_info, info
    from astropt.data.shards import Manifest

    summary = info(args.directory)
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(Manifest.read(args.directory).to_json())
    print()
    print(format_info(summary))
    return 0


def run_show(args: argparse.Namespace) -> int:
    from astropt.data.figures import show
    from astropt.data.shards import ShardSet

    ids = args.ids or ShardSet(args.directory).ids[:16]
    path = show(args.directory, ids, args.out, field=args.field, columns=args.columns, label=args.label)
    print(path)
    return 0
