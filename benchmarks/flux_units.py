"""``flux_scale: auto`` on surveys in other units: the built-in survey, x 1000 and / 1000.

The built-in survey is in nanomaggies per pixel; multiplied by 1000 it stands for a survey
in "counts", divided by 1000 for one in much smaller units. ``tiny-cpu`` models are pretrained
with the same budget: with ``flux_scale: auto`` (the sky noise that ``prepare`` measured,
per band) on the first two, and with the fixed ``0.002`` (the built-in survey's units) on all;
each embeds its own survey's held-out split, which is ridge-probed (k-fold) for the
physical labels.

    python -m benchmarks.flux_units --quick     # smoke run, a few minutes
    python -m benchmarks.flux_units             # the table of SCIENCE.md (~10 minutes on 2 cores)

Outputs in ``benchmarks/out/flux_units/`` (``results.json``, ``results.md``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
from pathlib import Path

import numpy as np
import torch

from astropt.atomic import atomic_write_text
from astropt.data.loader import split_indices
from astropt.data.shards import Manifest, ShardSet, finalize, write_shard
from astropt.data.synthetic import synthesize
from astropt.model import load_pretrained
from benchmarks.science import HERE, Budget, markdown_table, pretrain, r2_table, run_config

log = logging.getLogger("flux_units")
TARGETS = ["redshift", "mag_r", "hlr_arcsec", "bulge_fraction", "ellipticity"]
SURVEYS = {"nanomaggies": 1.0, "counts (x1000)": 1000.0, "small units (/1000)": 0.001}
SCALES = {"auto": "auto", "fixed 0.002": 0.002}
# auto gives the same tokens in any units (tests/data/test_noise.py): one scaled survey shows it.
AUTO_ON = ("nanomaggies", "counts (x1000)")


def scaled_copy(source: Path, out: Path, factor: float, rows: int = 512) -> Path:
    """The prepared folder ``source`` with every image multiplied by ``factor`` (other labels,
    ids and arrays as they are), written by the one shard writer."""
    if (out / "manifest.json").is_file() or out == source:
        return out
    data = ShardSet(source)
    entries = []
    for k, start in enumerate(range(0, len(data), rows)):
        records = [data[i] for i in range(start, min(start + rows, len(data)))]
        for r in records:
            r["image"] = np.asarray(r["image"]) * factor
        entries.append(write_shard(out, k, records, data.manifest.arrays))
    m = data.manifest
    finalize(out, entries, m.arrays, m.labels, {"scaled_from": str(source), "factor": factor}, m.config_hash)
    return out


def run(budget: Budget, out: Path) -> dict:
    data_dirs = {name: out / f"data-x{factor:g}" for name, factor in SURVEYS.items()}
    synthesize(data_dirs["nanomaggies"], budget.n, seed=budget.seed, progress=False)
    for name, factor in SURVEYS.items():
        scaled_copy(data_dirs["nanomaggies"], data_dirs[name], factor)
    results: dict = {"date": datetime.date.today().isoformat(), "budget": budget.__dict__, "targets": TARGETS,
                     "noise": {k: Manifest.read(d).band_stats["image"]["noise"] for k, d in data_dirs.items()},
                     "rows": {}, "flux_scale": {}}
    for survey, path in data_dirs.items():
        data = ShardSet(path)
        held = split_indices(data.ids, "val", budget.val_fraction)
        labels = {t: v[held] for t, v in data.labels(TARGETS).items()}
        for scale_name, scale in SCALES.items():
            if scale == "auto" and survey not in AUTO_ON:
                continue
            tag = f"x{SURVEYS[survey]:g}-{'auto' if scale == 'auto' else 'fixed'}-{budget.steps}"
            cfg = run_config(out, tag, budget, [f"data.path={path}", "data.synth_n=0",
                                                f"model.modalities.0.flux_scale={scale}"])
            final, _ = pretrain(cfg)
            model = load_pretrained(final)
            name = f"{survey}, flux_scale {scale_name}"
            results["flux_scale"][name] = model.config.modalities[0].flux_scale
            features = {"default": _embed(model, data, held)}
            results["rows"][name] = r2_table(features, labels, TARGETS, budget.folds)["default"]
            log.info("%s: %s", name, results["rows"][name])
    return results


def _embed(model, data: ShardSet, held: np.ndarray) -> np.ndarray:
    from astropt.tasks.common import model_batches, used_modalities

    configs = used_modalities(model, data)
    model.eval()
    with torch.no_grad():
        return np.concatenate([model.embed(batch)[configs[0].name].float().numpy()
                               for _, _, batch in model_batches(data, held, 128, configs)])


def render(results: dict) -> str:
    b = results["budget"]
    noise = "; ".join(f"{k}: " + ", ".join(f"{v:.4g}" for v in n) for k, n in results["noise"].items())
    return "\n\n".join([
        f"# flux_scale auto vs fixed on a survey in other units ({results['date']})",
        f"{b['n']} galaxies, {b['steps']} steps x batch {b['batch']}, held-out fraction {b['val_fraction']}, "
        f"{b['folds']}-fold ridge probe R² of the default embedding.",
        f"Measured sky noise per band (g, r, i, z): {noise}.",
        markdown_table(results["rows"], results["targets"]),
    ]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: a small survey, few steps")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "flux_units")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    budget = (Budget(n=400, steps=30, batch=16, warmup=5, val_fraction=0.4, folds=3) if args.quick
              else Budget(n=800, steps=150, batch=16, warmup=15, val_fraction=0.3, folds=5))
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(budget, args.out)
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.out / "results.md", render(results))
    print(render(results))  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
