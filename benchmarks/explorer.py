"""Explorer benchmark: browser time to first paint and frame time while panning, and server latency.

```
python -m benchmarks.explorer                      # 10^5 and 10^6 points, server on 10^5 objects
python -m benchmarks.explorer --points 100000 --server-n 20000
```

Browser: a page of N random points (the ``--static`` page, built by the same
``render_page``) opened from ``file://`` in headless Chromium (WebGL on SwiftShader: no GPU),
``first paint`` = ``window.explorer.firstPaintMs``, i.e. from navigation start until the
first frame after the points were drawn (parsing the payload included); ``frame`` = the
intervals between animation frames while the mouse drags the map for a few seconds.

Server: ``astropt explore``'s server over N random embeddings (64-d) and a small prepared
shard folder for the images; latency of ``/api/thumb`` (first request per id: composite + PNG;
then cached) and of ``/api/neighbours`` with k=16 (exact FAISS search), from a client on
the same machine. Prints a Markdown table and writes ``benchmarks/out/explorer.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path
from urllib.request import urlopen

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from astropt.data.shards import ArraySpec, finalize, write_shard
from astropt.tasks.explore import Catalog, ExploreConfig, make_server, render_page
from astropt.tasks.explore.catalog import encode_column, label_entry

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
OUT = Path(__file__).resolve().parent / "out"


def random_payload(n: int, seed: int = 0) -> dict:
    """A page payload of ``n`` clustered random points with one numeric and one categorical label."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-0.7, 0.7, size=(20, 2))
    cluster = rng.integers(0, 20, n)
    xy = np.clip(centres[cluster] + rng.normal(0, 0.08, (n, 2)), -0.99, 0.99).astype(np.float32)
    labels = [label_entry("z", rng.uniform(0, 2, n)), label_entry("cluster", cluster.astype(str))]
    return {"version": 1, "title": f"{n} random points", "column": "embedding", "method": "random",
            "n": n, "n_total": n, "subsampled": False, "limit": None, "k": 16, "metric": "cosine",
            "ids": [f"r{i}" for i in range(n)], "x": encode_column(xy[:, 0]), "y": encode_column(xy[:, 1]),
            "labels": labels, "anomaly": None, "default_color": "z",
            "static": {"thumbnails": {}, "neighbours": None}}


def browser_run(browser, n: int, folder: Path, pan_seconds: float) -> dict:
    page_path = folder / f"points_{n}.html"
    page_path.write_text(render_page(random_payload(n)))
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    start = time.perf_counter()
    page.goto(page_path.as_uri(), timeout=300_000)
    page.wait_for_function("window.explorer && (window.explorer.ready || window.explorer.error)",
                           timeout=300_000)
    wall = time.perf_counter() - start
    first_paint = page.evaluate("window.explorer.firstPaintMs")
    box = page.locator("#canvas").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    # start measuring without waiting for it (evaluate would await the promise)
    page.evaluate(f"() => {{ window.frames_ = window.explorer.measureFrames({pan_seconds * 1000}); }}")
    page.mouse.move(cx, cy)
    page.mouse.down()
    t_end = time.perf_counter() + pan_seconds
    step = 0
    while time.perf_counter() < t_end:  # circles of radius 150 px, one mouse event every ~8 ms
        step += 1
        page.mouse.move(cx + 150 * np.cos(step / 20), cy + 150 * np.sin(step / 20))
        page.wait_for_timeout(8)
    page.mouse.up()
    measured = page.evaluate("window.frames_")
    intervals = np.array(measured["intervals"])
    redraws = np.array(page.evaluate(f"window.explorer.panContinuously({pan_seconds * 1000})"))
    context.close()
    return {"points": n, "page_mb": round(page_path.stat().st_size / 2**20, 1), "load_wall_s": round(wall, 2),
            "first_paint_ms": round(first_paint), "frames": len(intervals),
            "frame_ms_median": round(float(np.median(intervals)), 1),
            "frame_ms_p95": round(float(np.percentile(intervals, 95)), 1),
            "redraws": measured["draws"], "redraws_per_s": round(measured["draws"] / pan_seconds, 1),
            "camera_moved": round(measured["moved"], 3),
            "programmatic_pan_frame_ms_median": round(float(np.median(redraws)), 1),
            "programmatic_pan_frame_ms_p95": round(float(np.percentile(redraws, 95)), 1), "errors": errors}


def write_survey(folder: Path, n: int, n_images: int, dim: int = 64, seed: int = 0) -> Path:
    """Random embeddings of ``n`` objects; images (4 bands, 64x64) for the first ``n_images``."""
    rng = np.random.default_rng(seed)
    ids = [f"obj{i:07d}" for i in range(n)]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    records = [{"id": ids[i], "image": rng.normal(0, 1, (4, 64, 64)).astype(np.float32),
                "labels": {"z": float(rng.uniform(0, 2))}} for i in range(n_images)]
    arrays = {"image": ArraySpec([4, 64, 64])}
    entries = [write_shard(folder / "data", k, records[s:s + 256], arrays)
               for k, s in enumerate(range(0, n_images, 256))]
    finalize(folder / "data", entries, arrays, {"z": "float64"})
    table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), dim),
                      "z": rng.uniform(0, 2, n)})
    pq.write_table(table, folder / "e.parquet")
    return folder / "e.parquet"


def timed_get(url: str) -> float:
    start = time.perf_counter()
    with urlopen(url, timeout=60) as response:
        response.read()
    return (time.perf_counter() - start) * 1000


def summary(ms: list[float]) -> dict:
    return {"median_ms": round(statistics.median(ms), 2), "p95_ms": round(float(np.percentile(ms, 95)), 2)}


def server_run(folder: Path, n: int, n_images: int = 512, queries: int = 100) -> dict:
    path = write_survey(folder, n, n_images)
    start = time.perf_counter()
    catalog = Catalog(path, folder / "data", ExploreConfig(method="pca"))
    setup = time.perf_counter() - start
    server = make_server(catalog, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    rng = np.random.default_rng(1)
    thumb_ids = [catalog.emb.ids[i] for i in rng.choice(n_images, queries, replace=False)]
    query_ids = [catalog.emb.ids[i] for i in rng.choice(n, queries, replace=False)]
    result = {"objects": n, "setup_s (layout + kNN anomaly + index, first run)": round(setup, 1),
              "points_ms (first request)": round(timed_get(f"{base}/api/points"), 1),
              "thumb_cold": summary([timed_get(f"{base}/api/thumb?id={i}") for i in thumb_ids]),
              "thumb_cached": summary([timed_get(f"{base}/api/thumb?id={i}") for i in thumb_ids]),
              "neighbours_k16": summary([timed_get(f"{base}/api/neighbours?id={i}&k=16") for i in query_ids])}
    server.shutdown()
    server.server_close()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--server-n", type=int, default=100_000)
    parser.add_argument("--pan-seconds", type=float, default=4.0)
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    results = {"browser": [], "server": None}
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
        for n in args.points:
            results["browser"].append(browser_run(browser, n, Path(tmp), args.pan_seconds))
            print(json.dumps(results["browser"][-1]))
        browser.close()
        results["server"] = server_run(Path(tmp), args.server_n)
    print("\n| points | page MB | first paint (ms) | mouse drag: redraws/s | frame p95 (ms) "
          "| camera pan: frame median (ms) | p95 (ms) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results["browser"]:
        print(f"| {r['points']:,} | {r['page_mb']} | {r['first_paint_ms']} | {r['redraws_per_s']} | "
              f"{r['frame_ms_p95']} | {r['programmatic_pan_frame_ms_median']} | "
              f"{r['programmatic_pan_frame_ms_p95']} |")
    print("\n" + json.dumps(results["server"], indent=1))
    OUT.mkdir(exist_ok=True)
    (OUT / "explorer.json").write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
