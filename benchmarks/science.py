"""Science-quality benchmark: what do the embeddings know, at the reference's compute budget?

On the synthetic GalSim survey (fixed seed, held-out split by id hash) this trains

1. the reference ``astropt`` (PyPI, separate virtual environment, run as a subprocess by
   ``science_reference_worker.py``) on tokens made with its conventions, and
2. AstroPT with ``configs/tiny-cpu.yaml`` (plus any lever overrides),

with the same shape, steps, batch, tokens per image and learning-rate schedule; embeds the
held-out split with each model's defaults and ridge-probes the physical labels (k-fold CV),
side by side with PCA-64 of asinh-stretched pixels, the same transformer with random weights
and a supervised CNN trained on the labels (an upper reference).

    python -m benchmarks.science --quick            # smoke run, a few minutes
    python -m benchmarks.science                    # the comparison of SCIENCE.md
    python -m benchmarks.science --levers           # + one model per lever (smaller budget)
    python -m benchmarks.science --scaling          # + 3 model sizes: R² vs pretraining FLOPs

Outputs in ``benchmarks/out/science/`` (``results.json``, ``results.md``, ``scaling.png``).
Pretrained models are cached by config hash, so a rerun only probes again.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import logging
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from astropt.atomic import atomic_write_text
from astropt.config import ModalityConfig, RunConfig, config_hash, load_config
from astropt.data.loader import split_indices
from astropt.data.shards import ShardSet
from astropt.modalities import build_modality
from astropt.model import AstroPT, load_pretrained
from astropt.model.astropt import pool_tokens
from astropt.tasks import baselines
from astropt.tasks.common import iter_batches, model_batches, used_modalities
from astropt.tasks.demo import DEMO_LABELS
from astropt.tasks.probe import probe_arrays, regression_metrics
from astropt.train.logging import flops_per_token

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
log = logging.getLogger("science")

# Levers, as config overrides on top of configs/tiny-cpu.yaml; each is one trained model.
IMG = "model.modalities.0"
LEGACY_TOKENS = [f"{IMG}.flux_features=false", f"{IMG}.stretch=none", f"{IMG}.normalize=patch",
                 f"{IMG}.patch_order=spiral", "model.embed_pool=mean", "model.embed_layer=-1"]
FLUX = [f"{IMG}.flux_features=true", f"{IMG}.stretch=asinh", f"{IMG}.stretch_scale=0.01"]
LEVERS: dict[str, list[str]] = {
    "legacy tokens": LEGACY_TOKENS,
    "+ flux features (linear pixels)": LEGACY_TOKENS + [f"{IMG}.flux_features=true"],
    "+ flux features + asinh (scale 0.01)": LEGACY_TOKENS + FLUX,
    "+ flux features + asinh (scale 0.1)": LEGACY_TOKENS + FLUX[:2] + [f"{IMG}.stretch_scale=0.1"],
    "+ flux + asinh 0.01, raster order": LEGACY_TOKENS + FLUX + [f"{IMG}.patch_order=raster"],
    "+ flux + asinh 0.01, masked (MAE)": LEGACY_TOKENS + FLUX + ["train.objective=mae", "model.attn=full"],
    # Flux features in units of the survey's sky noise (r band: 0.0017 nMgy per pixel).
    "+ flux features, survey scale": LEGACY_TOKENS + [f"{IMG}.flux_features=true", f"{IMG}.flux_scale=0.002"],
    "no augmentation": LEGACY_TOKENS + ["data.augment=false"],
    "patch 16 (16 tokens)": LEGACY_TOKENS + [f"{IMG}.patch_size=16", "model.block_size=16"],
    # Issue 18: levers on top of the current default (tiny-cpu as it stands).
    "default (tiny-cpu)": [],
    "default, no augmentation": ["data.augment=false"],
    "default + AR and masked (weight 1)": ["train.objective=ar_mae", "train.mae_weight=1.0"],
    "default + AR and masked (weight 0.25)": ["train.objective=ar_mae", "train.mae_weight=0.25"],
    "default + blocks 1-3 concatenated": ["model.embed_layers=[1,2,3]"],
    "default + blocks 0-3 concatenated": ["model.embed_layers=[0,1,2,3]"],
    "default + blocks 2-3 concatenated": ["model.embed_layers=[2,3]"],
    # 4x the tokens per step: run it at the default's token budget (--lever-steps 500).
    "patch 4 (256 tokens, flux features)": [f"{IMG}.patch_size=4", "model.block_size=256"],
}
# Overrides that change only how the embedding is read, not the trained weights: a lever made
# of these reuses the model of the lever with the rest of its overrides.
EMBED_ONLY = ("model.embed_layer=", "model.embed_layers=", "model.embed_pool=")
# Sizes of the scaling mini-study (n_layer, n_head, n_embd): about 0.3M, 1M and 3M parameters.
SIZES = {"0.3M": (3, 4, 64), "1M": (4, 8, 128), "3M": (6, 8, 192)}


@dataclass
class Budget:
    """The compute both sides get, and the size of the survey."""

    n: int = 3000
    steps: int = 600
    batch: int = 32
    warmup: int = 50
    val_fraction: float = 0.25
    folds: int = 5
    cnn_epochs: int = 8
    seed: int = 0

    @classmethod
    def quick(cls) -> Budget:
        return cls(n=400, steps=40, batch=16, warmup=5, val_fraction=0.4, folds=3, cnn_epochs=1)


# ----------------------------------------------------------------------------- our side


def survey(out: Path, budget: Budget) -> ShardSet:
    """The built-in survey of ``budget`` (griz, 64 pixels, no spectra), synthesised once into
    ``out/data``."""
    from astropt.data.synthetic import synthesize

    synthesize(out / "data", budget.n, seed=budget.seed, image_size=64, bands="griz", workers=2,
               spectra=False, progress=False)
    return ShardSet(out / "data")


def run_config(out: Path, tag: str, budget: Budget, overrides: list[str]) -> RunConfig:
    """``configs/tiny-cpu.yaml`` at ``budget`` with ``overrides`` (a lever / a size)."""
    base = [f"data.path={out / 'data'}", f"train.out_dir={out / 'runs' / tag}",
            f"data.synth_n={budget.n}", f"data.val_fraction={budget.val_fraction}",
            f"data.batch_size={budget.batch}", f"train.max_steps={budget.steps}",
            f"train.warmup_steps={budget.warmup}", f"train.eval_interval={budget.steps}",
            f"train.ckpt_interval={10 * budget.steps}", "train.figures=false", "train.log_interval=50"]
    return load_config(ROOT / "configs" / "tiny-cpu.yaml", base + overrides)


def equal_flops_steps(cfg: RunConfig, flops: float, batch: int) -> int:
    """Training steps at which the model of ``cfg`` spends ``flops`` pretraining FLOPs."""
    with torch.device("meta"):
        n_params = AstroPT(cfg.model).num_params()
    per_step = flops_per_token(cfg.model, n_params) * batch * cfg.model.sequence_length
    return max(1, round(flops / per_step))


def slug(name: str) -> str:
    """A folder name for a lever: ``+ flux, asinh 0.01`` -> ``flux-asinh-0.01``."""
    return "-".join(re.findall(r"[A-Za-z0-9.]+", name)).lower()


def run_hash(cfg: RunConfig) -> str:
    """Hash of what determines the trained weights (not where they are written)."""
    return config_hash(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, out_dir="")))


def pretrain(cfg: RunConfig) -> tuple[Path, float]:
    """Train (or reuse the cached model of the same config) -> (final folder, seconds)."""
    from astropt.train.loop import train

    run_dir = Path(cfg.train.out_dir)
    stamp, final = run_dir / "science_config_hash", run_dir / "final"
    if final.is_dir() and stamp.is_file() and stamp.read_text().split()[0] == run_hash(cfg):
        return final, float(stamp.read_text().split()[1])
    start = time.time()
    train(cfg, overwrite=True)
    seconds = time.time() - start
    atomic_write_text(stamp, f"{run_hash(cfg)} {seconds:.1f}")
    return final, seconds


def default_embeddings(model: AstroPT, data: ShardSet, indices: np.ndarray, batch_size: int = 128) -> np.ndarray:
    """The model's default embedding (its layer and pooling) of ``indices``."""
    configs = used_modalities(model, data)
    model.eval()
    with torch.no_grad():
        return np.concatenate([model.embed(batch)[configs[0].name].float().numpy()
                               for _, _, batch in model_batches(data, indices, batch_size, configs)])


def pooled_features(model: AstroPT, data: ShardSet, held: np.ndarray, batch_size: int = 128) -> dict[str, np.ndarray]:
    """The model's default embedding plus pooling/layer variants, from one pass per batch.

    ``l{k} mean`` / ``mean+max`` / ``mean+std`` / ``mean+max+std``: output of block k pooled by
    the parts of :func:`pool_tokens`'s ``mean_max_std``; ``all layers mean`` / ``mean+max``:
    those pools of every block concatenated.
    """
    configs = used_modalities(model, data)
    cols: dict[str, list[np.ndarray]] = {}
    model.eval()
    for _, _, batch in model_batches(data, held, batch_size, configs):
        feats = {"default": model.embed(batch)[configs[0].name]}
        layers = model.embed_all_layers(batch, pool="none")
        for k, out in enumerate(layers):
            x = out[configs[0].name]  # (B, n, C)
            mean_max_std = pool_tokens(x, "mean_max_std")  # the model's own pooling
            mean, spread = mean_max_std[:, : x.shape[-1]], mean_max_std[:, 2 * x.shape[-1] :]
            feats[f"l{k} mean"] = mean
            feats[f"l{k} mean+max"] = mean_max_std[:, : 2 * x.shape[-1]]
            feats[f"l{k} mean+std"] = torch.cat([mean, spread], -1)
            feats[f"l{k} mean+max+std"] = mean_max_std
        feats["all layers mean"] = torch.cat([feats[f"l{k} mean"] for k in range(len(layers))], -1)
        feats["all layers mean+max"] = torch.cat([feats[f"l{k} mean+max"] for k in range(len(layers))], -1)
        for name, value in feats.items():
            cols.setdefault(name, []).append(value.float().numpy())
    return {k: np.concatenate(v) for k, v in cols.items()}


def r2_table(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], targets: list[str],
             folds: int) -> dict[str, dict[str, float]]:
    """Ridge-probe R² of every target on every feature matrix (k-fold CV on the held-out split)."""
    out = {}
    for name, x in features.items():
        res, _ = probe_arrays(x, labels, targets, model="ridge", folds=folds, uncertainty=False)
        out[name] = {t: round(res[t]["r2"], 4) for t in targets}
    return out


def weight_overrides(overrides: list[str]) -> list[str]:
    """The overrides of a lever that change the trained weights (not the ``EMBED_ONLY`` ones)."""
    return [o for o in overrides if not o.startswith(EMBED_ONLY)]


def lever_tag(name: str, steps: int) -> str:
    """Run folder of a lever: that of the lever it shares its weights with, if any."""
    train_ov = weight_overrides(LEVERS[name])
    base = next((n for n, ov in LEVERS.items() if ov == train_ov), name)
    return f"lever-{slug(base)}-{steps}"


def ours(out: Path, tag: str, budget: Budget, overrides: list[str], data: ShardSet, held: np.ndarray,
         labels: dict[str, np.ndarray], targets: list[str]) -> dict:
    """Pretrain one configuration of ours (or reuse the model of the same weights) and probe
    its embedding variants; ``EMBED_ONLY`` overrides are applied to the loaded model."""
    cfg = run_config(out, tag, budget, overrides)
    final, seconds = pretrain(run_config(out, tag, budget, weight_overrides(overrides)))
    model = load_pretrained(final)
    model.config = dataclasses.replace(model.config, embed_layer=cfg.model.embed_layer,
                                       embed_layers=cfg.model.embed_layers, embed_pool=cfg.model.embed_pool)
    n_params = model.num_params()
    tokens_seen = budget.steps * budget.batch * cfg.model.sequence_length
    return {"overrides": overrides, "n_params": n_params, "train_seconds": round(seconds, 1),
            "tokens_seen": tokens_seen, "flops": flops_per_token(cfg.model, n_params) * tokens_seen,
            "r2": r2_table(pooled_features(model, data, held), labels, targets, budget.folds)}


# ----------------------------------------------------------------------------- reference side


def legacy_tokens(data: ShardSet, indices: np.ndarray, patch_size: int, image_size: int, channels: int) -> np.ndarray:
    """``(n, T, D)`` tokens with the reference conventions (per-patch norm, spiral order)."""
    cfg = ModalityConfig(name="images", kind="image", image_size=image_size, n_channels=channels,
                         patch_size=patch_size, patch_order="spiral", normalize="patch")
    tokenizer = build_modality(cfg)
    field = baselines.image_field(data)
    chunks = [tokenizer.tokenize(torch.from_numpy(rows[field])).values.numpy()
              for _, rows in iter_batches(data, indices, 256)]
    return np.concatenate(chunks).astype(np.float32)


def mean_max_path(emb_path: Path) -> Path:
    """Where the reference's mean+max pooled embeddings sit next to its default ones."""
    return emb_path.with_name(emb_path.stem + "_mean_max.npy")


def reference_path(out: Path, budget: Budget, cfg: RunConfig) -> Path:
    """Where the reference's held-out embeddings at this shape and budget are cached."""
    m = cfg.model
    return out / f"reference_{m.n_layer}x{m.n_embd}_p{m.modalities[0].patch_size}_{budget.steps}x{budget.batch}_n{budget.n}.npy"


def reference(out: Path, budget: Budget, cfg: RunConfig, data: ShardSet, train_idx: np.ndarray,
              held: np.ndarray) -> tuple[np.ndarray, dict]:
    """Train the reference on the training split at ``budget``; its held-out embeddings."""
    sys.path.insert(0, str(HERE))
    from refenv import ensure_refenv

    python = ensure_refenv(HERE / "out" / "refenv")  # shared with benchmarks.run
    image = cfg.model.modalities[0]
    emb_path = reference_path(out, budget, cfg)
    summary_path = emb_path.with_suffix(".json")
    if emb_path.is_file() and summary_path.is_file():
        return np.load(emb_path), json.loads(summary_path.read_text())
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        tmp = Path(tmp)
        for name, idx in (("train", train_idx), ("held", held)):
            np.save(tmp / f"{name}.npy", legacy_tokens(data, idx, image.patch_size, image.image_size, image.n_channels))
        t = cfg.train
        spec = {"train_tokens": str(tmp / "train.npy"), "held_tokens": str(tmp / "held.npy"),
                "out": str(tmp / "emb.npy"), "out_mean_max": str(tmp / "emb_mean_max.npy"), "n_layer": cfg.model.n_layer, "n_head": cfg.model.n_head,
                "n_embd": cfg.model.n_embd, "n_chan": image.n_channels, "patch_size": image.patch_size,
                "steps": t.max_steps, "batch": cfg.data.batch_size, "lr": t.lr, "min_lr": t.min_lr,
                "warmup": t.warmup_steps, "weight_decay": t.weight_decay, "grad_clip": t.grad_clip,
                "seed": budget.seed, "threads": torch.get_num_threads()}
        (tmp / "spec.json").write_text(json.dumps(spec))
        proc = subprocess.run([str(python), str(HERE / "science_reference_worker.py"), str(tmp / "spec.json")],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"reference worker failed:\n{proc.stderr[-3000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        emb = np.load(tmp / "emb.npy")
        np.save(mean_max_path(emb_path), np.load(tmp / "emb_mean_max.npy"))
    np.save(emb_path, emb)
    atomic_write_text(summary_path, json.dumps(summary))
    return emb, summary


# ----------------------------------------------------------------------------- baselines


def baseline_rows(cfg: RunConfig, data: ShardSet, train_idx: np.ndarray, held: np.ndarray,
                  labels: dict[str, np.ndarray], targets: list[str], budget: Budget) -> dict[str, dict[str, float]]:
    """PCA-64 of stretched pixels, random-init transformer (probed), supervised CNN (trained)."""
    images = baselines.load_images(data, held)
    feats = {"PCA-64 of asinh pixels": baselines.pixel_pca(images, 64, seed=budget.seed),
             "random-init transformer": baselines.random_transformer_embeddings(cfg.model, data, held, budget.seed)}
    rows = r2_table(feats, labels, targets, budget.folds)
    y_all = data.labels(targets)
    y_train = np.stack([y_all[t][train_idx] for t in targets], 1).astype(np.float64)
    keep = np.isfinite(y_train).all(1)
    pred = baselines.supervised_cnn(baselines.load_images(data, train_idx[keep]), y_train[keep], images,
                                    epochs=budget.cnn_epochs, seed=budget.seed, progress=False)
    rows["supervised CNN (upper ref.)"] = {
        t: round(regression_metrics(labels[t].astype(np.float64), pred[:, k])["r2"], 4) for k, t in enumerate(targets)}
    return rows


# ----------------------------------------------------------------------------- report


def markdown_table(rows: dict[str, dict[str, float]], targets: list[str]) -> str:
    """Rows of R² (one per method) as a Markdown table."""
    lines = ["| method | " + " | ".join(targets) + " |", "| --- |" + " ---: |" * len(targets)]
    lines += [f"| {name} | " + " | ".join(f"{r[t]:.3f}" for t in targets) + " |" for name, r in rows.items()]
    return "\n".join(lines)


def scaling_figure(scaling: dict[str, dict], targets: list[str], path: Path, x: str = "flops") -> None:
    """Probe R² of each label against pretraining FLOPs (or ``x="n_params"``: model size at
    equal FLOPs), one point per model size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(scaling)
    xs = [scaling[s][x] for s in names]
    for t in targets:
        ax.plot(xs, [scaling[s]["r2"]["default"][t] for s in names], "o-", label=t)
    for s, f in zip(names, xs, strict=True):
        ax.annotate(f"{s}, {scaling[s]['steps']} steps" if x == "n_params" else s, (f, 0.02), ha="center", fontsize=8)
    xlabel = "parameters (equal pretraining FLOPs)" if x == "n_params" else "pretraining FLOPs"
    ax.set(xscale="log", xlabel=xlabel, ylabel="ridge-probe R² (held-out)", ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    with tempfile.NamedTemporaryFile(dir=path.parent, suffix=".png", delete=False) as tmp:
        fig.savefig(tmp.name, dpi=120)
    plt.close(fig)
    os.replace(tmp.name, path)


def render(results: dict) -> str:
    """The Markdown report of one run."""
    targets, b = results["targets"], results["budget"]
    if "ours" not in results:
        head = f"# Levers / scaling ({results['date']}, {b['n']} galaxies)"
        return "\n\n".join([head] + _lever_parts(results, targets) + _scaling_parts(results)) + "\n"
    main = {"reference astropt 2.0.9 (its defaults)": results["reference"]["r2"],
            **({"reference astropt 2.0.9, pooled mean+max": results["reference"]["r2_mean_max"]}
               if "r2_mean_max" in results["reference"] else {}),
            "AstroPT tiny-cpu (its defaults)": results["ours"]["r2"]["default"], **results["baselines"]}
    parts = [f"# Science benchmark ({results['date']})",
             f"{b['n']} galaxies, held-out {results['n_held']} probed with {b['folds']}-fold ridge; "
             f"{b['steps']} steps x batch {b['batch']} for both models "
             f"(ours {results['ours']['n_params']:,} parameters, reference {results['reference']['n_params']:,}).",
             markdown_table(main, targets),
             "## Embedding variants of the AstroPT model", markdown_table(results["ours"]["r2"], targets)]
    parts += _lever_parts(results, targets)
    parts += _scaling_parts(results)
    return "\n\n".join(parts) + "\n"


def _scaling_parts(results: dict) -> list[str]:
    parts = []
    for name, size in results.get("scaling", {}).items():
        parts.append(f"## Size {name}: {size['n_params']:,} parameters, {size['flops']:.2e} FLOPs")
        rows = {"ours (default)": size["r2"]["default"], "ours (pooled like the reference)": size["r2"][f"l{SIZES[name][0] // 2} mean"],
                "reference": size["reference_r2"]}
        parts.append(markdown_table(rows, results["targets"]))
    return parts


def _lever_parts(results: dict, targets: list[str]) -> list[str]:
    parts = []
    for name, lever in results.get("levers", {}).items():
        parts.append(f"## Lever: {name} ({lever['train_seconds']} s; `{' '.join(lever['overrides']) or 'tiny-cpu'}`)")
        parts.append(markdown_table(lever["r2"], targets))
    return parts


# ----------------------------------------------------------------------------- main


def compare(out: Path, budget: Budget, overrides: list[str], tag: str, data: ShardSet, train_idx: np.ndarray,
            held: np.ndarray, labels: dict[str, np.ndarray], targets: list[str],
            with_reference: bool = True) -> tuple[dict, dict]:
    """Ours (with ``overrides``) and the reference at the same shape and budget."""
    ours_row = ours(out, tag, budget, overrides, data, held, labels, targets)
    if not with_reference:
        return ours_row, {"n_params": 0, "r2": {t: float("nan") for t in targets}}
    cfg = run_config(out, tag, budget, overrides)
    emb, summary = reference(out, budget, cfg, data, train_idx, held)
    row = {**summary, "r2": r2_table({"r": emb}, labels, targets, budget.folds)["r"]}
    emb_path = reference_path(out, budget, cfg)
    if mean_max_path(emb_path).is_file():  # the reference pooled by mean and max, as a check
        row["r2_mean_max"] = r2_table({"r": np.load(mean_max_path(emb_path))}, labels, targets, budget.folds)["r"]
    return ours_row, row


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny survey and budget (smoke run)")
    parser.add_argument("--out", default=str(HERE / "out" / "science"))
    parser.add_argument("--steps", type=int, help="training steps of both models")
    parser.add_argument("--n", type=int, help="galaxies in the survey")
    parser.add_argument("--levers", action="store_true", help="one model per lever of LEVERS")
    parser.add_argument("--lever", action="append", help="run only the levers whose name contains this (repeatable)")
    parser.add_argument("--lever-steps", type=int, help="steps of each lever model (default: --steps)")
    parser.add_argument("--scaling", action="store_true", help="the 0.3M/1M/3M mini-study")
    parser.add_argument("--scaling-steps", type=int, help="steps of each size (default: --steps)")
    parser.add_argument("--scaling-flops", type=float,
                        help="equal-FLOPs ladder: steps of each size set so that each spends this many FLOPs")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference model")
    parser.add_argument("--only-levers", action="store_true", help="the levers study alone (no main table)")
    parser.add_argument("--only-scaling", action="store_true", help="the scaling study alone (no main table)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    budget = Budget.quick() if args.quick else Budget()
    budget.n, budget.steps = args.n or budget.n, args.steps or budget.steps
    out = Path(args.out) / ("quick" if args.quick else "full")
    out.mkdir(parents=True, exist_ok=True)

    data = survey(out, budget)
    train_idx = split_indices(data.ids, "train", budget.val_fraction)
    held = split_indices(data.ids, "val", budget.val_fraction)
    targets = list(DEMO_LABELS)
    labels = {t: v[held] for t, v in data.labels(targets).items()}
    results: dict = {"date": datetime.date.today().isoformat(), "budget": asdict(budget), "targets": targets,
                     "n_held": len(held), "torch_threads": torch.get_num_threads()}
    if not (args.only_levers or args.only_scaling):
        results["ours"], results["reference"] = compare(
            out, budget, [], "tiny-cpu", data, train_idx, held, labels, targets, not args.no_reference)
        cfg = run_config(out, "tiny-cpu", budget, [])
        results["baselines"] = baseline_rows(cfg, data, train_idx, held, labels, targets, budget)
    if args.levers or args.only_levers:
        lever_budget = Budget(**{**asdict(budget), "steps": args.lever_steps or budget.steps})
        results["levers"] = {name: ours(out, lever_tag(name, lever_budget.steps), lever_budget, ov, data, held, labels, targets)
                             for name, ov in LEVERS.items()
                             if not args.lever or any(sel in name for sel in args.lever)}
    if args.scaling or args.only_scaling:
        results["scaling"] = {}
        size_budget = Budget(**{**asdict(budget), "steps": args.scaling_steps or budget.steps})
        for name, (n_layer, n_head, n_embd) in SIZES.items():
            ov = [f"model.n_layer={n_layer}", f"model.n_head={n_head}", f"model.n_embd={n_embd}"]
            tag, this_budget = f"size-{name}", size_budget
            if args.scaling_flops:
                steps = equal_flops_steps(run_config(out, tag, size_budget, ov), args.scaling_flops, size_budget.batch)
                this_budget, tag = Budget(**{**asdict(size_budget), "steps": steps}), f"size-{name}-{steps}"
            row, ref = compare(out, this_budget, ov, tag, data, train_idx, held, labels, targets,
                               not args.no_reference)
            results["scaling"][name] = {**row, "steps": this_budget.steps,
                                        "reference_r2": ref.get("r2", {t: float("nan") for t in targets})}
        name = "scaling_flops.png" if args.scaling_flops else "scaling.png"
        scaling_figure(results["scaling"], targets, out / name, x="n_params" if args.scaling_flops else "flops")
    stem = (f"levers_{args.lever_steps or budget.steps}" if args.only_levers
            else ("scaling_flops" if args.scaling_flops else "scaling") if args.only_scaling else "results")
    atomic_write_text(out / f"{stem}.json", json.dumps(results, indent=2))
    atomic_write_text(out / f"{stem}.md", render(results))
    print(render(results))
    return results


if __name__ == "__main__":
    main()
