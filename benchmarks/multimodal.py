"""Multimodal benchmark: does one sequence of image + spectrum tokens learn redshift better?

Synthesises a small survey (the built-in GalSim survey when available, otherwise a simple
numpy stand-in with the same record layout, reported as such), trains
``configs/multimodal-tiny.yaml`` and its image-only twin (same image modality, same model
size) with the standard training loop, embeds the held-out objects, and probes redshift
with a 5-fold ridge regression from:

- ``joint``: the multimodal model's pooled image+spectrum embedding;
- ``image (multimodal model)``: its image tokens only;
- ``spectrum alone``: the multimodal model given the spectrum only;
- ``image-only model``: the twin's embedding.

Then predicts spectra from images (``astropt.tasks.crossmodal``). Prints a table and writes
``benchmarks/out/multimodal.json`` (+ the cross-modal figure).

Two references say how far the spectra themselves carry redshift at this label count:
``spectrum, all blocks (probe fit on the training split)`` (mean+max+std of every block of the
multimodal model, ridge fit on the embeddings of the pretraining split, scored on the held-out
objects) and ``supervised 1-D CNN on spectra``, trained on the training split's labels.

    python benchmarks/multimodal.py --n 2000 --steps 800 [--spectrum-exposure 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from astropt.atomic import atomic_write_text
from astropt.config import RunConfig, from_dict, load_config, to_dict
from astropt.data.loader import split_indices
from astropt.data.shards import MANIFEST, ArraySpec, ShardSet, finalize, write_shard
from astropt.model import load_pretrained
from astropt.tasks.common import model_batches
from astropt.tasks.crossmodal import predict_modality
from astropt.tasks.probe import probe_arrays, regression_metrics

ROOT = Path(__file__).resolve().parent.parent
METRICS = ("r2", "nmad", "outlier_fraction", "bias")  # reported for each redshift probe
LINES = {3727.0: 3.0, 4861.0: 1.5, 5007.0: 3.0, 6563.0: 5.0}  # rest wavelength: strength


def numpy_survey(path: Path, n: int, seed: int) -> str:
    """Stand-in survey: Gaussian galaxies whose colours and spectra follow their redshift."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:64, :64] - 31.5
    wl = np.linspace(3600.0, 9800.0, 480)
    band_centres = np.array([4800.0, 6200.0, 7600.0, 9100.0])
    records = []
    for i in range(n):
        z = rng.uniform(0.02, 0.8)
        red = rng.uniform(0, 1)  # old (strong 4000 A break, weak lines) .. young
        rest = wl / (1 + z)
        cont = 1 + red * np.tanh((rest - 4000.0) / 150.0) + 0.2 * (rest / 5000.0)
        lines = sum(s * (1 - red) * np.exp(-0.5 * ((rest - c) / 4.0) ** 2) for c, s in LINES.items())
        flux_scale = 10 ** rng.uniform(-0.5, 0.5) / (1 + 5 * z) ** 2
        sigma = 0.05 * flux_scale
        spec = flux_scale * (cont + lines) + sigma * rng.normal(size=wl.size)
        bands = np.interp(band_centres / (1 + z), rest, cont) * flux_scale
        radius = rng.uniform(2, 5) / (1 + 2 * z)
        blob = np.exp(-(xx**2 + yy**2) / (2 * radius**2))
        image = bands[:, None, None] * blob + 0.01 * rng.normal(size=(4, 64, 64))
        records.append({"id": f"obj{i:06d}", "image": image, "spectrum": spec, "spectrum_wavelength": wl,
                        "spectrum_ivar": np.full(wl.size, sigma**-2), "labels": {"redshift": z}})
    arrays = {"image": ArraySpec([4, 64, 64]), "spectrum": ArraySpec([-1]),
              "spectrum_wavelength": ArraySpec([-1]), "spectrum_ivar": ArraySpec([-1])}
    entries = [write_shard(path, k, records[s : s + 500], arrays) for k, s in enumerate(range(0, n, 500))]
    finalize(path, entries, arrays, {"redshift": "float64"}, source={"kind": "numpy stand-in"})
    return "numpy stand-in (no astropt.data.synthetic)"


def make_survey(path: Path, n: int, seed: int, exposure: float = 1.0) -> str:
    if (path / MANIFEST).is_file():
        return "existing"
    try:
        from astropt.data.synthetic import synthesize
    except ImportError:
        return numpy_survey(path, n, seed)
    synthesize(path, n, seed=seed, image_size=64, bands="griz", workers=2, spectrum_exposure=exposure)
    return f"astropt.data.synthetic (GalSim, spectrum exposure {exposure:g})"


def configs(data: Path, out: Path, steps: int) -> tuple[RunConfig, RunConfig]:
    over = [f"data.path={data}", f"train.max_steps={steps}", "train.ckpt_interval=100000",
            f"train.out_dir={out / 'multimodal'}", "data.val_fraction=0.25", "train.figures=false"]
    multi = load_config(ROOT / "configs" / "multimodal-tiny.yaml", over)
    plain = to_dict(multi)
    plain["model"]["modalities"] = [m for m in plain["model"]["modalities"] if m["kind"] == "image"]
    plain["train"]["out_dir"] = str(out / "image-only")
    return multi, from_dict(RunConfig, plain)


@torch.no_grad()
def embed(model, data: ShardSet, idx: np.ndarray, only: list[str] | None = None,
          layer: int | None = None, pool: str | None = None) -> dict[str, np.ndarray]:
    """Pooled embeddings of objects ``idx`` (all modalities, or ``only`` those); ``layer`` and
    ``pool`` default to the model's."""
    model.eval()
    mods = [m for m in model.config.modalities if only is None or m.name in only]
    parts: dict[str, list[np.ndarray]] = {}
    for _, _, batch in model_batches(data, idx, 128, mods):
        for name, x in model.embed(batch, layer=layer, pool=pool).items():
            parts.setdefault(name, []).append(x.float().numpy())
    return {k: np.concatenate(v) for k, v in parts.items()}


def spectrum_arrays(data: ShardSet, idx: np.ndarray) -> np.ndarray:
    """``(n, 1, L)`` spectra, each divided by its median absolute flux (clipped at 20)."""
    spectra = np.stack(data.get_batch(idx)["spectrum"]).astype(np.float32)
    spectra /= np.median(np.abs(spectra), axis=1, keepdims=True) + 1e-6
    return np.clip(spectra, -20, 20)[:, None]


def supervised_spectrum_cnn(x_train: np.ndarray, z_train: np.ndarray, x_test: np.ndarray,
                            epochs: int = 60, seed: int = 0) -> np.ndarray:
    """A small 1-D CNN trained on labelled spectra (Huber loss): its held-out redshifts."""
    import torch.nn as nn

    torch.manual_seed(seed)
    n_flat = 64 * (x_train.shape[-1] // 8)
    net = nn.Sequential(nn.Conv1d(1, 32, 7, padding=3), nn.GELU(), nn.MaxPool1d(2),
                        nn.Conv1d(32, 64, 7, padding=3), nn.GELU(), nn.MaxPool1d(2),
                        nn.Conv1d(64, 64, 7, padding=3), nn.GELU(), nn.MaxPool1d(2), nn.Flatten(),
                        nn.Linear(n_flat, 128), nn.GELU(), nn.Linear(128, 1))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-2)
    xt, zt = torch.from_numpy(x_train), torch.from_numpy(z_train.astype(np.float32))
    for _ in range(epochs):
        net.train()
        for j in torch.randperm(len(xt)).split(64):
            loss = torch.nn.functional.huber_loss(net(xt[j]).squeeze(1), zt[j], delta=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x_test)).squeeze(1).numpy()


def redshift_metrics(pred: np.ndarray, z: np.ndarray) -> dict[str, float]:
    """R², NMAD, outlier fraction and bias of redshift predictions."""
    m = regression_metrics(z, pred, redshift=True)
    return {k: m[k] for k in METRICS}


def all_blocks(model, data: ShardSet, idx: np.ndarray) -> np.ndarray:
    """Spectrum-only embeddings, mean+max+std of every block, concatenated."""
    return np.concatenate([embed(model, data, idx, only=["spectrum"], layer=k, pool="mean_max_std")["spectrum"]
                           for k in range(model.config.n_layer)], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--spectrum-exposure", type=float, default=1.0,
                    help="relative spectroscopic exposure of the synthetic survey (S/N ~ sqrt)")
    ap.add_argument("--work", default="runs/bench-multimodal")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(args.seed)
    work, out = Path(args.work), Path(args.out)
    from astropt.train.loop import train

    tic = time.time()
    survey = make_survey(work / "data", args.n, args.seed, args.spectrum_exposure)
    multi_cfg, image_cfg = configs(work / "data", work, args.steps)
    timings = {"survey_s": time.time() - tic}
    finals = {}
    for name, cfg in (("multimodal", multi_cfg), ("image-only", image_cfg)):
        tic = time.time()
        finals[name] = load_pretrained(train(cfg, overwrite=True) / "final")
        timings[f"train_{name}_s"] = time.time() - tic

    data = ShardSet(work / "data")
    idx = split_indices(data.ids, "val", multi_cfg.data.val_fraction)
    z = np.asarray(data.get_batch(idx, fields=[])["redshift"], dtype=np.float64)
    multi = embed(finals["multimodal"], data, idx)
    features = {
        "joint (image+spectrum)": multi["joint"],
        "image tokens (multimodal model)": multi["images"],
        "spectrum alone (multimodal model)": embed(finals["multimodal"], data, idx, only=["spectrum"])["spectrum"],
        "image-only model": embed(finals["image-only"], data, idx)["images"],
    }
    probes = {}
    for name, x in features.items():
        result, _ = probe_arrays(x, {"redshift": z}, ["redshift"], model="ridge", folds=5,
                                 seed=args.seed, uncertainty=False)
        probes[name] = {k: result["redshift"][k] for k in METRICS}
    train_idx = split_indices(data.ids, "train", multi_cfg.data.val_fraction)
    z_train = np.asarray(data.get_batch(train_idx, fields=[])["redshift"], dtype=np.float64)
    ridge = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 4, 15)))
    ridge.fit(all_blocks(finals["multimodal"], data, train_idx), z_train)
    probes["spectrum, all blocks (probe fit on the training split)"] = redshift_metrics(
        ridge.predict(all_blocks(finals["multimodal"], data, idx)), z)
    tic = time.time()
    probes["supervised 1-D CNN on spectra (upper ref.)"] = redshift_metrics(
        supervised_spectrum_cnn(spectrum_arrays(data, train_idx), z_train, spectrum_arrays(data, idx)), z)
    timings["spectrum_cnn_s"] = time.time() - tic
    cross = predict_modality(finals["multimodal"], data, "images", "spectrum", out, n=64,
                             val_fraction=multi_cfg.data.val_fraction)
    report = {"survey": survey, "n_objects": len(data), "n_heldout": int(len(idx)), "steps": args.steps,
              "probe_redshift_ridge_5fold": probes, "timings_s": timings,
              "crossmodal": {k: cross[k] for k in ("median_rel_error", "median_rel_error_flat",
                                                   "token_mse", "token_mse_zero", "figure")}}
    atomic_write_text(out / "multimodal.json", json.dumps(report, indent=2))
    print(f"survey: {survey}; {len(data)} objects, {len(idx)} held out; {args.steps} steps each")
    print(f"{'embedding':56s} {'R2':>7s} {'NMAD':>7s} {'outl.':>7s}")
    for name, m in probes.items():
        print(f"{name:56s} {m['r2']:7.3f} {m['nmad']:7.4f} {m['outlier_fraction']:7.3f}")
    print(f"spectrum from image: median relative error of the broad shape {cross['median_rel_error']:.3f} "
          f"(flat spectrum: {cross['median_rel_error_flat']:.3f}); figure {cross['figure']}")


if __name__ == "__main__":
    main()
