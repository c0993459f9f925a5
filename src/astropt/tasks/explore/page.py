"""The explorer page: one HTML shell around the bundled WebGL scatter, served or self-contained.

In server mode the page loads ``static/explorer.js`` and asks the server for its data; the
``--static`` export inlines the bundle, the stylesheet and a JSON payload (points subsampled
to ``static_limit``, thumbnails as ``data:`` URIs, each point's neighbours precomputed), so
the one file opens from ``file://`` with no network.
"""

from __future__ import annotations

import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from astropt.atomic import atomic_write_text
from astropt.tasks.explore.catalog import Catalog, encode_column
from astropt.tasks.explore.config import ExploreConfig
from astropt.tasks.explore.thumbs import data_uri

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"

BODY = """<header><b>AstroPT explorer</b> <span id="title">{title}</span>
<span id="status">loading…</span></header>
<main>
 <div id="plot"><canvas id="canvas"></canvas><div id="tooltip" hidden></div>
  <div id="hint">drag to pan · wheel to zoom · click an object for its neighbours ·
   shift + drag to select</div></div>
 <aside>
  <section><div id="drawn-count"></div><div id="note"></div>
   <label>colour by <select id="color-by"></select></label><div id="legend"></div></section>
  <section><h3>Filter</h3><select id="filter-label"></select>
   <span id="filter-range"><input id="filter-min" type="number" step="any" aria-label="minimum">
   – <input id="filter-max" type="number" step="any" aria-label="maximum"></span>
   <select id="filter-category" hidden></select>
   <button id="filter-apply">apply</button> <button id="filter-clear">show all</button></section>
  <section><h3>Selection</h3><label>shift + drag draws a
   <select id="select-mode"><option value="freeform">lasso</option><option value="rectangle">box</option></select>
   </label> <span id="selection-count">0 selected</span>
   <button id="export-csv" disabled>export ids (CSV)</button></section>
  <section id="neighbours"><h3>Neighbours</h3><p>click an object</p></section>
  <section id="anomalies"></section>
 </aside>
</main>"""


def _asset(name: str) -> str:
    path = STATIC_DIR / name
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the explorer's bundled page is missing; rebuild it with "
                                "`make explorer-js` or reinstall astropt")
    return path.read_text(encoding="utf-8")


def _inline_script(code: str) -> str:
    if "</script" in code.lower():
        raise ValueError("the explorer bundle contains '</script' and cannot be inlined; rebuild it")
    return f"<script>{code}</script>"


def render_page(payload: dict[str, Any] | None = None, title: str = "") -> str:
    """The page: with ``payload`` a self-contained file, without it the server's page."""
    if payload is None:
        head = '<link rel="stylesheet" href="static/explorer.css">'
        tail = '<script src="static/explorer.js"></script>'
    else:
        data = json.dumps(payload, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")
        head = f"<style>{_asset('explorer.css')}</style>"
        tail = f'<script type="application/json" id="explorer-data">{data}</script>' + _inline_script(
            _asset("explorer.js"))
        title = title or payload.get("title", "")
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AstroPT explorer '
            f'{html.escape(title)}</title><link rel="icon" href="data:,">{head}</head><body>'
            f"{BODY.format(title=html.escape(title))}{tail}</body></html>")


def static_rows(catalog: Catalog, limit: int, seed: int = 0) -> np.ndarray:
    """At most ``limit`` rows: every top anomaly, then a random sample of the rest (sorted)."""
    n = len(catalog)
    if n <= limit:
        return np.arange(n)
    keep = catalog.anomaly_order[: min(catalog.config.top, limit)]
    rest = np.setdiff1d(np.arange(n), keep)
    sample = np.random.default_rng(seed).choice(rest, size=limit - len(keep), replace=False)
    return np.sort(np.concatenate([keep, sample]))


def _static_extras(catalog: Catalog, rows: np.ndarray) -> dict[str, Any]:
    """Thumbnails (top anomalies first) and each point's precomputed neighbours."""
    k = catalog.config.k
    hits = catalog.neighbours_of_rows(rows, k)
    ids: list[str | None] = [None] * (len(rows) * k)
    scores = np.zeros(len(rows) * k, dtype=np.float32)
    for r, row_hits in enumerate(hits):
        for hit in row_hits:
            ids[r * k + hit["rank"]], scores[r * k + hit["rank"]] = hit["id"], hit["score"]
    thumbnails: dict[str, str] = {}
    if catalog.data is not None and catalog.config.static_thumbnails:
        top_ids = [a["id"] for a in catalog.top_anomalies()]
        ordered = dict.fromkeys(top_ids + [catalog.emb.ids[i] for i in rows])
        for object_id in list(ordered)[: catalog.config.static_thumbnails]:
            thumbnails[object_id] = data_uri(catalog.thumbnail(object_id))
    return {"thumbnails": thumbnails, "neighbours": {"k": k, "ids": ids, "scores": encode_column(scores)}}


def export_static(
    embeddings: str | os.PathLike | Catalog,
    out: str | os.PathLike,
    data: str | os.PathLike | None = None,
    config: ExploreConfig | None = None,
    color_by: str | None = None,
) -> dict[str, Any]:
    """Write a self-contained explorer page of ``embeddings`` to ``out`` (``--static``).

    Returns:
        ``{"path", "n", "n_total", "limit", "thumbnails", "bytes"}``.
    """
    catalog = embeddings if isinstance(embeddings, Catalog) else Catalog(embeddings, data, config)
    cfg = catalog.config
    rows = static_rows(catalog, cfg.static_limit, cfg.seed)
    payload = catalog.payload(rows, limit=cfg.static_limit)
    payload["static"] = _static_extras(catalog, rows)
    payload["default_color"] = color_by
    page = render_page(payload)
    atomic_write_text(out, page)
    if len(rows) < len(catalog):
        log.info("static explorer shows %d of %d objects (limit %d)", len(rows), len(catalog), cfg.static_limit)
    return {"path": str(out), "n": len(rows), "n_total": len(catalog), "limit": cfg.static_limit,
            "thumbnails": len(payload["static"]["thumbnails"]), "bytes": len(page.encode())}
