"""``astropt demo``: the main job on the embedded default, end to end, in one call.

1. synthesise the GalSim survey (cached in ``OUT/data``);
2. pretrain the ``tiny-cpu`` model (cached in ``OUT/run``: skipped when ``final`` exists for
   the same config);
3. embed the held-out split; probe every continuous physical label, side by side with the
   baselines (PCA of pixels, the same transformer with random weights, a supervised CNN);
4. a similarity search, an anomaly ranking, a map and image completions;
5. ``OUT/report.json``, a self-contained ``OUT/report.html`` (figures embedded) and the
   interactive ``OUT/explorer.html`` it links to (``astropt explore --static``).
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from astropt.atomic import atomic_write_bytes, atomic_write_text
from astropt.config import RunConfig, config_hash, load_config
from astropt.data.loader import split_indices
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.model import load_pretrained
from astropt.tasks import baselines
from astropt.tasks.anomaly import anomalies
from astropt.tasks.common import images_for_ids, rare_flags
from astropt.tasks.embed import embed, load_embeddings
from astropt.tasks.explore import ExploreConfig, export_static
from astropt.tasks.explore.thumbs import thumbnail_png
from astropt.tasks.generate import complete_image
from astropt.tasks.map import embedding_map
from astropt.tasks.probe import (
    is_categorical,
    probe_arrays,
    regression_metrics,
    write_probe_outputs,
)
from astropt.tasks.search import search

log = logging.getLogger(__name__)

ANOMALY_ROWS = 20
DEMO_LABELS = ("redshift", "mag_r", "hlr_arcsec", "bulge_fraction", "ellipticity")
METHODS = {"astropt": "AstroPT (pretrained)", "pca": "(a) PCA of pixels",
           "random": "(b) random-weight transformer", "cnn": "(c) supervised CNN (upper ref.)"}


def find_config(name: str | os.PathLike) -> Path:
    """A config file path, or a named config (``tiny-cpu``) looked up in ``./configs/``, then
    in the configs shipped with the package."""
    path = Path(name)
    if path.is_file():
        return path
    shipped = Path(__file__).resolve().parents[1] / "configs"  # package data
    for folder in (Path.cwd() / "configs", shipped):
        candidate = folder / f"{name}.yaml"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"config {name!r}: no such file, and no configs/{name}.yaml")


def demo_config(out: Path, config: str, n: int | None, steps: int | None, quick: bool) -> RunConfig:
    """The run config of the demo: the named config pointed at ``out``, shrunk for ``quick``."""
    overrides = [f"data.path={out / 'data'}", f"train.out_dir={out / 'run'}"]
    if quick:
        n, steps = n or 200, steps or 30
        overrides += ["train.warmup_steps=5", "train.eval_interval=15", "train.log_interval=5",
                      "train.ckpt_interval=1000", "data.val_fraction=0.3"]
    if n:
        overrides.append(f"data.synth_n={n}")
    if steps:
        overrides.append(f"train.max_steps={steps}")
    return load_config(find_config(config), overrides)


def _stage(k: int, text: str) -> None:
    log.info("[demo %d/6] %s", k, text)


def prepare(cfg: RunConfig, seed: int = 0) -> tuple[ShardSet, Path]:
    """Stages 1-2: synthesised survey and pretrained model (both cached)."""
    from astropt.data.synthetic import synthesize
    from astropt.train.loop import train

    image = next(m for m in cfg.model.modalities if m.kind == "image")
    _stage(1, f"synthetic survey of {cfg.data.synth_n} objects -> {cfg.data.path}")
    synthesize(cfg.data.path, cfg.data.synth_n, seed=cfg.data.synth_seed or seed,
               image_size=image.image_size, bands=image.bands or None)
    run_dir = Path(cfg.train.out_dir)
    stamp, final = run_dir / "demo_config_hash", run_dir / "final"
    if final.is_dir() and stamp.is_file() and stamp.read_text() == config_hash(cfg):
        _stage(2, f"reusing the pretrained model in {final}")
    else:
        _stage(2, f"pretraining for {cfg.train.max_steps} steps -> {run_dir}")
        train(cfg, overwrite=True)
        atomic_write_text(stamp, config_hash(cfg))
    return ShardSet(cfg.data.path), final


def continuous_targets(labels: dict[str, np.ndarray]) -> list[str]:
    """The demo's physical labels when present, otherwise every varying numeric label."""
    usable = [n for n, v in labels.items()
              if not is_categorical(v) and np.nanstd(v.astype(np.float64)) > 0 and not n.startswith("is_")]
    preferred = [n for n in DEMO_LABELS if n in usable]
    return preferred or usable


def compare_probes(cfg: RunConfig, data: ShardSet, model_dir: Path, emb_path: Path, out: Path,
                   held: np.ndarray, train_idx: np.ndarray, quick: bool) -> dict[str, Any]:
    """Stage 3: probe every continuous label on the embeddings and the baselines."""
    emb = load_embeddings(emb_path)
    targets = continuous_targets(emb.labels)
    if not targets:
        raise DataError(f"{data.directory}: no continuous label to probe")
    folds = 3 if quick else 5
    results, preds = probe_arrays(emb.matrix(), emb.labels, targets, folds=folds)
    write_probe_outputs({"targets": results}, emb.labels, preds, out / "probe")
    table: dict[str, dict[str, Any]] = {"astropt": results}
    images = baselines.load_images(data, held)
    table["pca"], _ = probe_arrays(baselines.pixel_pca(images), emb.labels, targets, folds=folds,
                                   uncertainty=False)
    rand = baselines.random_transformer_embeddings(load_pretrained(model_dir).config, data, held)
    table["random"], _ = probe_arrays(rand, emb.labels, targets, folds=folds, uncertainty=False)
    all_labels = data.labels(targets)
    y_train = np.stack([all_labels[t][train_idx] for t in targets], 1).astype(np.float64)
    keep = np.isfinite(y_train).all(1)
    train_images = baselines.load_images(data, train_idx[keep])
    pred = baselines.supervised_cnn(train_images, y_train[keep], images, epochs=1 if quick else 8)
    table["cnn"] = {t: regression_metrics(emb.labels[t].astype(np.float64), pred[:, k], t == "redshift")
                    for k, t in enumerate(targets)}
    return {"targets": targets, "table": table}


def showcase(emb_path: Path, model_dir: Path, data: ShardSet, held: np.ndarray, out: Path) -> dict[str, Any]:
    """Stages 4-5: search, anomalies, map and completions; figure paths and their numbers.

    Search and anomaly ranking run over the whole survey (rare objects are 1%: the held-out
    split alone holds too few to score a ranking).
    """
    all_path = embed(model_dir, data, out / "embeddings_all.parquet", part_size=1024)
    emb = load_embeddings(emb_path)
    query = emb.ids[0]
    hits = search(all_path, query, k=12, out=out / "search.png")
    ranked = anomalies(all_path, top=min(50, len(data)), out=out / "anomalies")
    colour = next((t for t in DEMO_LABELS if t in emb.labels), None)
    explorer = export_static(all_path, out / "explorer.html", config=ExploreConfig(method="pca"), color_by=colour)
    embedding_map(emb_path, out / "map.png", color_by=colour)
    model = load_pretrained(model_dir)
    from astropt import viz
    from astropt.tasks.generate import CAPTION

    completions = []
    for k, row in enumerate(held[:3]):
        image = data.get_batch([row])[baselines.image_field(data)][0]
        res = complete_image(model, image, keep=0.5)
        viz.completion_figure(res["original"], res["kept"], res["completed"], out / f"completion_{k}.png", CAPTION)
        completions.append({"id": data.ids[row], "mse": res["mse"], "mse_mean_patch": res["mse_mean_patch"]})
    ranked["top"] = anomaly_rows(ranked["top"][:ANOMALY_ROWS], all_path, data, out / "anomalies" / "thumbs")
    return {"search": {"query": query, "hits": hits}, "anomalies": ranked, "completions": completions,
            "explorer": explorer}


def anomaly_rows(top: list[dict[str, Any]], all_path: Path, data: ShardSet, out: Path) -> list[dict[str, Any]]:
    """The report's anomaly table: rank, id, score, the object's kind where the data says,
    and a thumbnail written to ``out/<rank>.png``."""
    emb = load_embeddings(all_path)
    truth, kinds = rare_flags(emb.labels), emb.labels.get("kind")
    rows = []
    for item, image in zip(top, images_for_ids(data, [t["id"] for t in top]), strict=True):
        k = emb.index_of(item["id"])
        thumb = out / f"{item['rank']:03d}.png"
        atomic_write_bytes(thumb, thumbnail_png(image))
        rows.append({**item, "thumbnail": str(thumb), **({} if kinds is None else {"kind": str(kinds[k])}),
                     **({} if truth is None else {"rare": bool(truth[k])})})
    return rows


def run_demo(
    out: str | os.PathLike = "demo",
    config: str = "tiny-cpu",
    n: int | None = None,
    steps: int | None = None,
    quick: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the whole demo (see module docstring); returns the report (also written to disk)."""
    start = time.time()
    out = Path(out)
    cfg = demo_config(out, config, n, steps, quick)
    data, model_dir = prepare(cfg, seed)
    held = split_indices(data.ids, "val", cfg.data.val_fraction)
    train_idx = split_indices(data.ids, "train", cfg.data.val_fraction)
    _stage(3, f"embedding the {len(held)} held-out objects")
    emb_path = embed(model_dir, data, out / "embeddings.parquet", indices=held, part_size=1024)
    _stage(4, "probing labels, with baselines (PCA, random weights, supervised CNN)")
    probes = compare_probes(cfg, data, model_dir, emb_path, out, held, train_idx, quick)
    _stage(5, "search, anomalies, map, completions")
    extras = showcase(emb_path, model_dir, data, held, out)
    report = {"config": config, "n_objects": len(data), "n_held_out": len(held),
              "pretrain_steps": cfg.train.max_steps, **probes, **extras,
              "beats_baselines": beats(probes), "seconds": round(time.time() - start, 1)}
    _stage(6, f"writing {out / 'report.html'}")
    atomic_write_text(out / "report.json", json.dumps(report, indent=2, default=str))
    atomic_write_text(out / "report.html", render_html(report, out))
    report["table_text"] = table_text(probes)
    report["html"] = str(out / "report.html")
    return report


def beats(probes: dict[str, Any]) -> dict[str, bool]:
    """Per label: does the pretrained model's R² beat both (a) PCA and (b) random weights?"""
    t = probes["table"]
    return {name: bool(t["astropt"][name]["r2"] > max(t["pca"][name]["r2"], t["random"][name]["r2"]))
            for name in probes["targets"]}


def table_text(probes: dict[str, Any]) -> str:
    """The probe table (R²; NMAD for redshift) as aligned text."""
    lines = [f"{'label':<16}" + "".join(f"{m:>12}" for m in METHODS)]
    for name in probes["targets"]:
        cells = []
        for method in METHODS:
            m = probes["table"][method][name]
            cells.append(f"{m['r2']:>12.3f}")
        lines.append(f"{name:<16}" + "".join(cells))
    return "\n".join(lines) + "\n(R² on held-out objects; probes are 5-fold cross-validated ridge)"


def _img(path: Path) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.name)}">'


def render_anomalies(ranked: dict[str, Any]) -> str:
    """The anomaly section: ranking quality (precision@k, ROC AUC) and the top objects."""
    quality = ""
    for name, q in ranked.get("quality", {}).items():
        auc = f"{q['roc_auc']:.3f}" if "roc_auc" in q else "–"
        quality += (f"<tr><th>{html.escape(name)}</th><td>{q['precision_at_k']:.3f}</td><td>{q['k']}</td>"
                    f"<td>{auc}</td><td>{q['n_rare']}</td></tr>")
    rows = "".join(
        f"<tr{' class=rare' if item.get('rare') else ''}><td>{item['rank'] + 1}</td>"
        f"<td>{_img(Path(item['thumbnail'])) if item.get('thumbnail') else ''}</td>"
        f"<td>{html.escape(item['id'])}</td><td>{item['score']:.3f}</td>"
        f"<td>{html.escape(item.get('kind', ''))}</td></tr>" for item in ranked.get("top", []))
    head = "<h2>Anomaly ranking against the labelled rare classes</h2>"
    if quality:
        head += ("<table><tr><th>score</th><th>precision@k</th><th>k</th><th>ROC AUC</th>"
                 f"<th>labelled rare</th></tr>{quality}</table>")
    if rows:
        head += (f"<h3>The {len(ranked['top'])} most anomalous ({html.escape(str(ranked.get('by', '')))}; "
                 "red: labelled rare)</h3><table class=anomalies><tr><th>rank</th><th></th><th>id</th>"
                 f"<th>score</th><th>kind</th></tr>{rows}</table>")
    return head


def render_html(report: dict[str, Any], out: Path) -> str:
    """A self-contained HTML report: the probe table and every figure inlined."""
    rows = []
    for name in report["targets"]:
        cells = []
        for method in METHODS:
            m = report["table"][method][name]
            extra = f"<br><small>NMAD {m['nmad']:.3f}</small>" if "nmad" in m else ""
            cells.append(f"<td>{m['r2']:.3f}{extra}</td>")
        ok = "✓" if report["beats_baselines"][name] else "✗"
        rows.append(f"<tr><th>{html.escape(name)}</th>{''.join(cells)}<td>{ok}</td></tr>")
    head = "".join(f"<th>{html.escape(v)}</th>" for v in METHODS.values())
    figures = [("Probe: predicted vs true (pretrained embeddings)", out / "probe" / "probe_scatter.png"),
               ("Image completion from the central half of the tokens", out / "completion_0.png"),
               ("", out / "completion_1.png"),
               ("Embedding map", out / "map.png"),
               (f"Similarity search: neighbours of {report['search']['query']}", out / "search.png"),
               ("Most anomalous objects (kNN distance)", out / "anomalies" / "anomalies.png")]
    body = "".join(f"<h2>{html.escape(t)}</h2>{_img(p)}" if t else _img(p) for t, p in figures)
    anomaly_section = render_anomalies(report.get("anomalies", {}))
    explorer = report.get("explorer")
    link = (f'<p><a href="{html.escape(Path(explorer["path"]).name)}">Open the interactive explorer</a> of the '
            f'whole survey ({explorer["n"]} objects: zoom, colour by a label, hover for images, click for '
            "neighbours; one self-contained file).</p>") if explorer else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>AstroPT demo report</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}img{{max-width:100%}}
table.anomalies img{{width:48px;image-rendering:pixelated}}tr.rare td{{background:#fde2e2}}</style></head><body>
<h1>AstroPT demo</h1>
<p>{report['n_objects']} synthetic galaxies; model pretrained for {report['pretrain_steps']} steps;
probes on {report['n_held_out']} held-out objects; total {report['seconds']} s.</p>
<h2>Probe R² on held-out objects (cross-validated ridge; CNN trained on the training split)</h2>
<table><tr><th>label</th>{head}<th>beats (a) and (b)</th></tr>{''.join(rows)}</table>
{link}{anomaly_section}
{body}</body></html>"""
