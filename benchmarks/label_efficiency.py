"""Label efficiency: pretrained AstroPT (probe, LoRA, full finetune) vs a supervised CNN.

The claim tested (AstroPT-Euclid, arXiv:2503.15312): finetuned foundation-model embeddings
beat a fully supervised model for photometric redshift and stellar mass with 1% of the
labels. On the built-in survey:

1. ``tiny-cpu`` is pretrained (no labels) on one survey (seed 0);
2. a second survey (seed 1, the same generator: disjoint objects) is split once into a test
   set and a labelled pool (``astropt.tasks.finetune.labelled_splits``); for 1, 3, 10, 30 and
   100% of the pool (nested sets; validation labels for early stopping count in the budget):
   - linear probe: ridge on the pretrained model's default embedding,
   - LoRA and full finetuning: ``astropt.tasks.finetune.label_efficiency`` (the function
     behind ``astropt finetune --label-curve``), both labels jointly,
   - the supervised CNN of ``astropt.tasks.baselines`` trained on the same labels;
3. all are scored on the same test set: redshift NMAD, bias and outlier fraction
   (``|dz|/(1+z) > 0.15``), log stellar mass RMSE (``log_stellar_mass`` is a label of the
   survey: Bell et al. 2003 r-band mass-to-light ratio from rest-frame g-r).

Small label sets get more epochs: at least ``min_steps`` finetuning steps and ``cnn_min_steps``
CNN steps (it trains from scratch), so no method is starved of optimizer steps.

    python -m benchmarks.label_efficiency --quick     # smoke run, a few minutes on 2 cores
    python -m benchmarks.label_efficiency             # mid size (SCIENCE.md), ~20 minutes
    python -m benchmarks.label_efficiency --full      # larger surveys and pretraining (hours)

Outputs in ``benchmarks/out/label_efficiency/`` (``results.json``, ``results.md``,
``label_efficiency.png``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from astropt.atomic import atomic_write_text
from astropt.data.shards import ShardSet
from astropt.data.synthetic import synthesize
from astropt.model import load_pretrained
from astropt.tasks import baselines
from astropt.tasks.common import is_redshift
from astropt.tasks.finetune import label_efficiency, labelled_splits
from astropt.tasks.probe import fit_predict, regression_metrics
from benchmarks.science import HERE, Budget, default_embeddings, pretrain, run_config

log = logging.getLogger("label_efficiency")
TARGETS = ["redshift", "log_stellar_mass"]
FRACTIONS = (0.01, 0.03, 0.1, 0.3, 1.0)
METHODS = ("linear probe", "LoRA finetune", "full finetune", "supervised CNN")
MIN_LABELS = 4  # at least 3 training and 1 validation object


@dataclass
class Setup:
    """Survey sizes and compute of one run."""

    n_pretrain: int = 1000
    pretrain_steps: int = 200
    batch: int = 16
    n: int = 1000
    test_fraction: float = 0.2
    val_fraction: float = 0.15
    epochs: int = 6
    """Finetuning epochs (at most: early stopping on the validation labels, patience 3)."""
    min_steps: int = 60
    """Finetuning optimizer steps at least (more epochs for small label sets)."""
    cnn_epochs: int = 8
    cnn_min_steps: int = 400
    """The CNN trains from scratch: at least this many steps (batch 64) for every label set."""
    seed: int = 0

    @classmethod
    def quick(cls) -> Setup:
        return cls(n_pretrain=400, pretrain_steps=40, n=500, epochs=2, min_steps=10, cnn_epochs=2, cnn_min_steps=40)

    @classmethod
    def full(cls) -> Setup:
        return cls(n_pretrain=4000, pretrain_steps=2000, batch=32, n=10000, epochs=20, min_steps=200,
                   cnn_epochs=20, cnn_min_steps=2000)


def scores(y: np.ndarray, pred: np.ndarray) -> dict[str, dict[str, float]]:
    """Test metrics of ``(n, k)`` predictions of :data:`TARGETS`."""
    return {t: regression_metrics(y[:, k], pred[:, k], is_redshift(t)) for k, t in enumerate(TARGETS)}


def pretrained_model(setup: Setup, out: Path) -> Path:
    """``tiny-cpu`` pretrained on a survey of its own (cached by config)."""
    budget = Budget(n=setup.n_pretrain, steps=setup.pretrain_steps, batch=setup.batch,
                    warmup=max(5, setup.pretrain_steps // 12), val_fraction=0.1, seed=setup.seed)
    tag = f"pretrain-{setup.n_pretrain}-{setup.pretrain_steps}x{setup.batch}"
    cfg = run_config(out, tag, budget, [f"data.path={out / f'pretrain-data-{setup.n_pretrain}'}"])
    final, seconds = pretrain(cfg)
    log.info("pretrained model %s (%.0f s)", final, seconds)
    return final


def run(setup: Setup, out: Path, pretrained: Path | None = None) -> dict:
    final = pretrained or pretrained_model(setup, out)
    data_dir = out / f"data-{setup.n}"
    synthesize(data_dir, setup.n, seed=setup.seed + 1, progress=False)
    data = ShardSet(data_dir)
    y = np.stack([data.labels(TARGETS)[t] for t in TARGETS], 1).astype(np.float64)
    valid = np.nonzero(np.isfinite(y).all(1))[0]  # the objects finetune draws its splits from
    pool = len(valid) - max(1, round(setup.test_fraction * len(valid)))
    sizes = sorted({max(MIN_LABELS, round(f * pool)) for f in FRACTIONS})
    splits = {n: labelled_splits(valid, setup.test_fraction, setup.val_fraction, n, setup.seed, True) for n in sizes}
    test = splits[sizes[0]][2]
    model = load_pretrained(final)
    features = default_embeddings(model, data, np.arange(len(data)))
    images = baselines.load_images(data, np.arange(len(data)))
    rows: dict[str, dict[int, dict]] = {m: {} for m in METHODS}
    for n, (train, val, _) in splits.items():
        labelled = np.concatenate([train, val])  # probe and CNN need no early stopping: all labels train
        probe = np.stack([fit_predict(features[labelled], y[labelled, k], features[test], seed=setup.seed)
                          for k in range(len(TARGETS))], 1)
        rows["linear probe"][n] = scores(y[test], probe)
        epochs = max(setup.cnn_epochs, math.ceil(setup.cnn_min_steps * 64 / len(labelled)))
        cnn = baselines.supervised_cnn(images[labelled], y[labelled], images[test], epochs=epochs,
                                       seed=setup.seed, progress=False)
        rows["supervised CNN"][n] = scores(y[test], cnn)
        log.info("%d labels: probe %s, CNN %s", n, rows["linear probe"][n], rows["supervised CNN"][n])
    common = dict(val_in_budget=True, min_steps=setup.min_steps, epochs=setup.epochs, batch_size=setup.batch,
                  test_fraction=setup.test_fraction, val_fraction=setup.val_fraction, seed=setup.seed,
                  device="cpu", progress=False)
    for method, full in (("LoRA finetune", False), ("full finetune", True)):
        rows[method] = label_efficiency(model, data, TARGETS, sizes=tuple(sizes), full=full, **common)
        log.info("%s: %s", method, rows[method])
    return {"date": datetime.date.today().isoformat(), "setup": asdict(setup), "targets": TARGETS,
            "pool": pool, "n_test": int(len(test)), "sizes": sizes,
            "fractions": {n: round(n / pool, 4) for n in sizes},
            "rows": {m: {str(n): r for n, r in per.items()} for m, per in rows.items()}}


# ----------------------------------------------------------------------------- report

PANELS = (("redshift", "nmad", "photo-z NMAD"), ("redshift", "outlier_fraction", "photo-z outlier fraction"),
          ("redshift", "bias", "photo-z bias"), ("log_stellar_mass", "rmse", "log M* RMSE (dex)"))


def figure(results: dict, path: Path) -> None:
    """One panel per metric against the number of labels; the CNN on 100% as a dashed line."""
    from matplotlib.figure import Figure

    from astropt.viz import save_figure

    fig = Figure(figsize=(13, 3.4))
    axes = fig.subplots(1, len(PANELS))
    full_cnn = results["rows"]["supervised CNN"][str(results["sizes"][-1])]
    for ax, (target, key, title) in zip(axes, PANELS, strict=True):
        for method, per in results["rows"].items():
            sizes = sorted(int(n) for n in per)
            ax.plot(sizes, [per[str(n)][target][key] for n in sizes], "o-", label=method, ms=4)
        ax.axhline(full_cnn[target][key], ls="--", c="grey", lw=1, label="supervised CNN, 100%")
        if key == "bias":
            ax.axhline(0, c="k", lw=0.5)
        ax.set(xscale="log", xlabel="labels used (train + validation)", title=title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"Label efficiency on the built-in survey (test set {results['n_test']}, pool {results['pool']})",
                 fontsize=10)
    fig.tight_layout()
    save_figure(fig, path)


def claims(results: dict) -> list[str]:
    """Where "finetuned beats supervised" holds: best finetune vs the CNN on the same labels and on 100%."""
    rows, sizes = results["rows"], results["sizes"]
    full_cnn = rows["supervised CNN"][str(sizes[-1])]
    lines = []
    for target, key, title in (PANELS[0], PANELS[1], PANELS[3]):
        for n in sizes:
            best = min(("LoRA finetune", "full finetune"), key=lambda m: rows[m][str(n)][target][key])
            value = rows[best][str(n)][target][key]
            same, hundred = rows["supervised CNN"][str(n)][target][key], full_cnn[target][key]
            lines.append(f"| {title} | {n} ({100 * n / results['pool']:.0f}%) | {best}: {value:.4f} | "
                         f"{same:.4f} {'beaten' if value < same else 'not beaten'} | "
                         f"{hundred:.4f} {'beaten' if value < hundred else 'not beaten'} |")
    return ["| metric | labels | best finetune | CNN, same labels | CNN, 100% |", "| --- | ---: | --- | --- | --- |",
            *lines]


def render(results: dict) -> str:
    s = results["setup"]
    given = results.get("pretrained", "pretrained here")
    model = (f"{s['n_pretrain']} galaxies pretrained {s['pretrain_steps']} steps x batch {s['batch']}"
             if given == "pretrained here" else f"pretrained model {Path(given).parent.name}")
    head = (f"# Label efficiency ({results['date']})\n\n{model}; downstream survey {s['n']} galaxies (other seed), "
            f"test set {results['n_test']}, labelled pool {results['pool']}.")
    lines = ["| method | labels | z NMAD | z bias | z outliers | log M* RMSE |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for method, per in results["rows"].items():
        for n in sorted(int(k) for k in per):
            z, m = per[str(n)]["redshift"], per[str(n)]["log_stellar_mass"]
            lines.append(f"| {method} | {n} | {z['nmad']:.4f} | {z['bias']:+.4f} | {z['outlier_fraction']:.3f} | "
                         f"{m['rmse']:.3f} |")
    return "\n\n".join([head, "\n".join(lines), "\n".join(claims(results))]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smoke run: small surveys, short training")
    mode.add_argument("--full", action="store_true", help="larger surveys and pretraining (hours on a CPU)")
    parser.add_argument("--out", type=Path, default=HERE / "out" / "label_efficiency")
    parser.add_argument("--pretrained", type=Path, default=None,
                        help="a pretrained model folder to evaluate instead of pretraining one (it must not "
                             "have seen the downstream survey, seed 1)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    setup = Setup.quick() if args.quick else Setup.full() if args.full else Setup()
    args.out.mkdir(parents=True, exist_ok=True)
    results = run(setup, args.out, args.pretrained)
    results["pretrained"] = str(args.pretrained or "pretrained here")
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2))
    atomic_write_text(args.out / "results.md", render(results))
    figure(results, args.out / "label_efficiency.png")
    print(render(results))  # noqa: T201 - a benchmark's report


if __name__ == "__main__":
    main()
