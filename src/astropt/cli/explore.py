"""``astropt explore``: the embedding explorer in the browser (served, or one static file)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields

from astropt.tasks.explore.config import METHODS, ExploreConfig

DEFAULTS = {f.name: f.default for f in fields(ExploreConfig)}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("explore", help="zoomable WebGL map of embeddings in the browser (local server or --static)")
    p.add_argument("embeddings", help="Parquet file from `astropt embed`")
    p.add_argument("--data", default=None, help="prepared data for thumbnails (default: the embedded one)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one)")
    p.add_argument("--static", default=None, metavar="OUT.html",
                   help="write one self-contained HTML file instead of serving")
    p.add_argument("--method", choices=METHODS, default=DEFAULTS["method"],
                   help="2-D layout (auto: UMAP when installed, else PCA)")
    p.add_argument("--column", default=None, help="embedding column (default: the file's)")
    p.add_argument("-k", type=int, default=DEFAULTS["k"], help="neighbours shown for a clicked object")
    p.add_argument("--metric", choices=["cosine", "l2"], default=DEFAULTS["metric"], help="neighbour metric")
    p.add_argument("--limit", type=int, default=DEFAULTS["static_limit"], help="most points in a --static file")
    p.add_argument("--thumbnails", type=int, default=DEFAULTS["static_thumbnails"],
                   help="most thumbnails embedded in a --static file")
    p.add_argument("--color-by", default=None, help="label to colour by at first (--static)")
    p.set_defaults(func=run_explore)


def run_explore(args) -> int:
    from astropt.tasks.explore import Catalog, export_static, serve

    config = ExploreConfig(column=args.column, method=args.method, k=args.k, metric=args.metric,
                           static_limit=args.limit, static_thumbnails=args.thumbnails)
    catalog = Catalog(args.embeddings, args.data, config)
    if args.static:
        print(json.dumps(export_static(catalog, args.static, color_by=args.color_by), indent=2))
        return 0
    serve(catalog, args.host, args.port)
    return 0
