"""Attention pooling trained with the probe, against fixed poolings, on the science survey.

The model of the science benchmark (``configs/tiny-cpu.yaml`` at ``--steps``, batch 32, on
the synthetic GalSim survey of ``benchmarks.science``; pretrained, or reused from its cache)
embeds the held-out objects' tokens at the middle block (the default embedding layer) and the
last; on the same objects and folds (k-fold CV) it compares

- ridge on ``mean_max_std`` (the default embedding and probe),
- the MLP probe on ``mean_max_std``,
- the attention probe (:mod:`astropt.tasks.attention_probe`) on the tokens,

by R² of every label. ::

    python -m benchmarks.attention_probe --quick               # smoke run (40 steps)
    python -m benchmarks.attention_probe --steps 2000           # SCIENCE.md's table

Outputs ``attention_probe_{steps}.json`` / ``.md`` in ``<out>/full`` (``<out>/quick``).
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from astropt.atomic import atomic_write_text
from astropt.data.loader import split_indices
from astropt.data.shards import ShardSet
from astropt.model import AstroPT, load_pretrained
from astropt.model.astropt import pool_tokens
from astropt.tasks.attention_probe import AttentionProbeConfig
from astropt.tasks.common import model_batches, used_modalities
from astropt.tasks.demo import DEMO_LABELS
from astropt.tasks.probe import probe_arrays
from benchmarks.science import HERE, Budget, markdown_table, pretrain, run_config, survey

log = logging.getLogger("attention_probe")
PROBES = ("ridge", "mlp", "attention")


def token_features(model: AstroPT, data: ShardSet, held: np.ndarray, layers: list[int],
                   batch_size: int = 128) -> dict[int, np.ndarray]:
    """Token embeddings ``(n, tokens, width)`` of ``held`` at each block of ``layers`` (one pass)."""
    configs = used_modalities(model, data)
    out: dict[int, list[np.ndarray]] = {k: [] for k in layers}
    model.eval()
    for _, _, batch in model_batches(data, held, batch_size, configs):
        with torch.no_grad():
            per_layer = model.features(batch, layers, pool="none")
        for k, feats in zip(layers, per_layer, strict=True):
            out[k].append(feats[configs[0].name].float().numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def compare(tokens: dict[int, np.ndarray], labels: dict[str, np.ndarray], targets: list[str], folds: int,
            attention: AttentionProbeConfig, probes: tuple[str, ...] = PROBES, seed: int = 0
            ) -> tuple[dict[str, dict[str, float]], dict[str, float]]:
    """R² per row (probe x features) and the seconds each row took."""
    rows, seconds = {}, {}
    for k, x in tokens.items():
        pooled = pool_tokens(torch.from_numpy(x), "mean_max_std").numpy()
        for name, model, feats in ((f"ridge, mean_max_std (block {k})", "ridge", pooled),
                                   (f"mlp, mean_max_std (block {k})", "mlp", pooled),
                                   (f"attention, tokens (block {k})", "attention", x)):
            if model not in probes:
                continue
            start = time.time()
            res, _ = probe_arrays(feats, labels, targets, model=model, folds=folds, seed=seed, uncertainty=False,
                                  attention=attention)
            rows[name] = {t: round(res[t]["r2"], 4) for t in targets}
            seconds[name] = round(time.time() - start, 1)
            log.info("%s: %s (%.0f s)", name, rows[name], seconds[name])
    return rows, seconds


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny survey and budget (smoke run)")
    parser.add_argument("--steps", type=int, help="pretraining steps (default: the science benchmark's)")
    parser.add_argument("--out", default=str(HERE / "out" / "science2000"),
                        help="the science benchmark's output folder (its data and cached models)")
    parser.add_argument("--pretrained", help="a model folder to probe instead of pretraining one "
                        "(it must be the tiny-cpu model of this survey for the comparison to hold)")
    parser.add_argument("--queries", type=int, default=AttentionProbeConfig.queries, help="attention probe queries")
    parser.add_argument("--hidden", type=int, default=AttentionProbeConfig.hidden, help="attention probe MLP width")
    parser.add_argument("--with-pool", default=None, help="attention probe: a fixed pooling the read-out sees too")
    parser.add_argument("--probes", nargs="+", choices=PROBES, default=list(PROBES), help="rows to run")
    parser.add_argument("--seed", type=int, default=0, help="seed of the folds and of the probes")
    parser.add_argument("--tag", default="", help="suffix of the output files (variants)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    budget = Budget.quick() if args.quick else Budget()
    budget.steps = args.steps or budget.steps
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)

    data = survey(out, budget)
    held = split_indices(data.ids, "val", budget.val_fraction)
    targets = list(DEMO_LABELS)
    labels = {t: v[held] for t, v in data.labels(targets).items()}
    if args.pretrained:
        final, train_seconds = Path(args.pretrained), None
    else:
        final, train_seconds = pretrain(run_config(out, "tiny-cpu", budget, []))
    model = load_pretrained(final)
    layers = sorted({model.config.default_embed_layer, model.config.n_layer - 1})
    attention = AttentionProbeConfig(queries=args.queries, hidden=args.hidden, with_pool=args.with_pool)
    rows, seconds = compare(token_features(model, data, held, layers), labels, targets, budget.folds, attention,
                            tuple(args.probes), args.seed)
    results = {"date": datetime.date.today().isoformat(), "budget": asdict(budget), "targets": targets,
               "n_held": int(len(held)), "model": str(final), "train_seconds": train_seconds,
               "attention": asdict(attention), "seed": args.seed, "r2": rows, "probe_seconds": seconds}
    report = (f"# Attention probe ({results['date']}, {budget.steps} steps, {len(held)} held-out objects, "
              f"{budget.folds}-fold CV)\n\n{markdown_table(rows, targets)}\n")
    stem = f"attention_probe_{budget.steps}{args.tag}"
    atomic_write_text(out / f"{stem}.json", json.dumps(results, indent=2))
    atomic_write_text(out / f"{stem}.md", report)
    print(report)
    return results


if __name__ == "__main__":
    main()
