"""LLM backbone and discrete image tokens vs our defaults, at equal wall clock on this CPU.

On the built-in synthetic survey (64x64 griz, 16x16 patches: 16 image tokens), three models
pretrain for the same number of seconds each, and a 5-fold ridge probe of their default
embedding on the held-out objects gives R² per label:

- ``native, continuous``: our GPT blocks (4 x 64), continuous patch tokens;
- ``tiny LLM, continuous``: ``configs/llm-tiny.yaml`` (a random 4 x 64 Llama with LoRA);
- ``native, discrete``: the same native model on discrete tokens: each patch replaced by the
  index of its nearest centroid in a k-means codebook of the training patches.

Steps are set from the measured seconds per training step of each model, so each gets the
same wall clock. Prints a markdown table and writes ``benchmarks/out/llm_backbone.json``.

    python benchmarks/llm_backbone.py --n 1500 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from science import Budget, default_embeddings, pretrain, r2_table

from astropt.atomic import atomic_write_text
from astropt.config import RunConfig, load_config
from astropt.data.loader import split_indices
from astropt.data.shards import ArraySpec, ShardSet, finalize, write_shard
from astropt.modalities import Codebook
from astropt.model import AstroPT, load_pretrained
from astropt.tasks.common import model_batches
from astropt.tasks.demo import DEMO_LABELS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
IMG = "model.modalities.0"
NATIVE = ["model.backbone=native", "model.llm.lora_r=0", "model.modality_tokens=false", "model.block_size=16"]


def config(out: Path, tag: str, data: Path, budget: Budget, steps: int, extra: list[str]) -> RunConfig:
    base = [f"data.path={data}", "data.synth_n=0", f"data.val_fraction={budget.val_fraction}",
            f"data.batch_size={budget.batch}", f"train.out_dir={out / 'runs' / tag}", f"train.max_steps={steps}",
            f"train.warmup_steps={min(budget.warmup, steps // 4)}", f"train.eval_interval={steps}",
            f"train.ckpt_interval={10 * steps}", "train.figures=false", "train.log_interval=50", "train.device=cpu"]
    return load_config(ROOT / "configs" / "llm-tiny.yaml", base + extra)


def seconds_per_step(cfg: RunConfig, data: ShardSet, idx: np.ndarray, repeats: int = 6) -> float:
    """Measured forward + backward + AdamW step time of a fresh model on one batch."""
    model = AstroPT(cfg.model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    _, _, batch = next(model_batches(data, idx[: cfg.data.batch_size], cfg.data.batch_size, cfg.model.modalities))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return float(np.median(times[2:]))


def codebook_survey(data: ShardSet, image_cfg, train_idx: np.ndarray, out: Path, k: int) -> Path:
    """The survey with each image as the k-means codes of its patch tokens (fit on train)."""
    chunks = []
    for _, _, batch in model_batches(data, train_idx[:400], 100, [image_cfg]):
        chunks.append(batch[image_cfg.name])
    book = Codebook.fit(torch.cat(chunks), k=k, seed=0)
    records = []
    for _, rows, batch in model_batches(data, np.arange(len(data.ids)), 200, [image_cfg]):
        codes = book.encode(batch[image_cfg.name]).numpy()
        for i, c in enumerate(codes):
            labels = {t: float(rows[t][i]) for t in DEMO_LABELS}
            records.append({"id": rows["id"][i], "discrete": c.astype(np.float32), "labels": labels})
    arrays = {"discrete": ArraySpec([codes.shape[1]])}
    entries = [write_shard(out, j, records[s : s + 1000], arrays) for j, s in enumerate(range(0, len(records), 1000))]
    finalize(out, entries, arrays, {t: "float64" for t in DEMO_LABELS})
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1500, help="galaxies in the survey")
    parser.add_argument("--seconds", type=float, default=60.0, help="training wall clock of each model")
    parser.add_argument("--codes", type=int, default=256, help="codebook size of the discrete tokens")
    parser.add_argument("--out", default=str(HERE / "out" / "llm_backbone"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    budget = Budget(n=args.n, batch=32, warmup=30, val_fraction=0.25, folds=5)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from astropt.data.synthetic import synthesize

    if not (out / "data").is_dir():
        synthesize(out / "data", budget.n, seed=0, image_size=64, bands="griz", workers=2, spectra=False,
                   progress=False)
    data = ShardSet(out / "data")
    train_idx = split_indices(data.ids, "train", budget.val_fraction)
    held = split_indices(data.ids, "val", budget.val_fraction)
    targets = list(DEMO_LABELS)
    labels = {t: v[held] for t, v in data.labels(targets).items()}
    image_cfg = config(out, "probe", out / "data", budget, 1, NATIVE).model.modalities[0]
    codes_dir = out / f"codes{args.codes}"
    if not codes_dir.is_dir():
        codebook_survey(data, image_cfg, train_idx, codes_dir, args.codes)
    discrete = f"model.modalities=[{{name: images, kind: discrete, field: discrete, vocab_size: {args.codes}, max_tokens: 16}}]"
    runs = {"native, continuous": (out / "data", NATIVE), "tiny LLM, continuous": (out / "data", []),
            "native, discrete": (codes_dir, NATIVE + [discrete])}
    results: dict = {"budget_seconds": args.seconds, "n": args.n, "n_held": len(held), "targets": targets,
                     "torch_threads": torch.get_num_threads(), "models": {}}
    for name, (path, extra) in runs.items():
        shards = ShardSet(path)
        probe_cfg = config(out, "probe", path, budget, 1, extra)
        per_step = seconds_per_step(probe_cfg, shards, train_idx)
        steps = max(10, int(args.seconds / per_step))
        tag = name.replace(", ", "-").replace(" ", "_")
        final, seconds = pretrain(config(out, tag, path, budget, steps, extra))
        model = load_pretrained(final)
        r2 = r2_table({"default": default_embeddings(model, shards, held)}, labels, targets, budget.folds)["default"]
        results["models"][name] = {"steps": steps, "seconds_per_step": round(per_step, 4),
                                   "train_seconds": round(seconds, 1), "n_params": model.num_params(),
                                   "trainable": model.num_params(trainable_only=True), "r2": r2}
    rows = ["| model | steps | s/step | params (trainable) | " + " | ".join(targets) + " |",
            "| --- | --- | --- | --- | " + " | ".join("---" for _ in targets) + " |"]
    for name, r in results["models"].items():
        cells = " | ".join(f"{r['r2'][t]:.3f}" for t in targets)
        rows.append(f"| {name} | {r['steps']} | {r['seconds_per_step']:.3f} | "
                    f"{r['n_params'] / 1e3:.0f}k ({r['trainable'] / 1e3:.0f}k) | {cells} |")
    print("\n".join(rows))
    atomic_write_text(HERE / "out" / "llm_backbone.json", json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
