"""Data-path throughput: objects/s from FITS cutouts, JPEGs and prepared shards.

Each path runs through a torch ``DataLoader`` with 0, 1 and 2 workers into batches of
tokenised images (the training Collator), for 64x64 images (4 bands for FITS and shards,
3 for JPEG). The reference rate is what the tiny CPU training config consumes: objects/s of
its forward + backward + AdamW step. The shard path should feed at least 5x that.

    python benchmarks/data_sources.py [--n 512] [--repeats 3] [--out benchmarks/out]

The machine may be shared, so each number is the median of ``--repeats`` passes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from astropy.io import fits
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from astropt.atomic import atomic_write_text
from astropt.config import load_config
from astropt.data.loader import Collator, ShardDataset
from astropt.data.prepare import prepare
from astropt.data.sources import SourceConfig, open_source
from astropt.model import AstroPT

ROOT = Path(__file__).resolve().parents[1]


class SourceDataset(Dataset):
    """A random-access source as a map-style torch dataset (reads one file per item)."""

    def __init__(self, cfg: SourceConfig):
        self.source = open_source(cfg)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> dict:
        return self.source.read(i)


def make_inputs(folder: Path, n: int) -> dict[str, Path]:
    """``n`` 64x64x4 FITS cutouts, ``n`` 64x64 RGB JPEGs, and shards of the FITS."""
    rng = np.random.default_rng(0)
    paths = {"fits": folder / "fits", "jpeg": folder / "jpeg", "shards": folder / "shards"}
    paths["fits"].mkdir()
    paths["jpeg"].mkdir()
    for i in range(n):
        image = rng.normal(size=(4, 64, 64)).astype(np.float32)
        fits.PrimaryHDU(image).writeto(paths["fits"] / f"obj{i:05d}.fits")
        rgb = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        Image.fromarray(rgb).save(paths["jpeg"] / f"obj{i:05d}.jpg", quality=90)
    prepare(SourceConfig(path=str(paths["fits"])), paths["shards"], rows_per_shard=256, progress=False)
    return paths


def loader_rate(dataset: Dataset, collate: Collator, workers: int, batch_size: int, repeats: int) -> float:
    """Median objects/s of full passes over ``dataset``."""
    rates = []
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, collate_fn=collate,
        persistent_workers=workers > 0, generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    for _ in range(repeats + 1):  # the first pass starts the workers: not timed
        start = time.perf_counter()
        n = sum(len(ids) for _, ids in loader)
        rates.append(n / (time.perf_counter() - start))
    return statistics.median(rates[1:])


def training_rate(config_path: Path, repeats: int) -> tuple[float, int]:
    """Objects/s one tiny-CPU training step (forward + backward + AdamW) consumes."""
    cfg = load_config(config_path)
    torch.manual_seed(0)
    model = AstroPT(cfg.model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    m = cfg.model.modalities[0]
    b = cfg.data.batch_size
    records = [{"id": str(i), m.field: np.random.default_rng(i).normal(size=(m.n_channels, m.image_size, m.image_size)).astype(np.float32)} for i in range(b)]
    batch, _ = Collator(cfg.model)(records)
    times = []
    for step in range(3 + 5 * repeats):
        start = time.perf_counter()
        loss = model.loss(batch, objective=cfg.train.objective)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step >= 3:  # warm-up steps are not timed
            times.append(time.perf_counter() - start)
    return b / statistics.median(times), b


def run(n: int, repeats: int, out: Path) -> dict:
    cfg = load_config(ROOT / "configs" / "tiny-cpu.yaml")
    collate4 = Collator(cfg.model)
    rgb = replace(cfg.model.modalities[0], n_channels=3, bands=["r", "g", "b"], input_size=0)
    collate3 = Collator(replace(cfg.model, modalities=[rgb]))
    train_rate, batch_size = training_rate(ROOT / "configs" / "tiny-cpu.yaml", repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_inputs(Path(tmp), n)
        datasets = {
            "fits": (SourceDataset(SourceConfig(path=str(paths["fits"]))), collate4),
            "jpeg": (SourceDataset(SourceConfig(path=str(paths["jpeg"]))), collate3),
            "shards": (ShardDataset(paths["shards"], split="all"), collate4),
        }
        for name, (dataset, collate) in datasets.items():
            for workers in (0, 1, 2):
                rate = loader_rate(dataset, collate, workers, batch_size, repeats)
                rows.append({"path": name, "workers": workers, "objects_per_s": rate, "x_training": rate / train_rate})
    result = {"n_objects": n, "batch_size": batch_size, "repeats": repeats, "training_objects_per_s": train_rate, "rows": rows}
    atomic_write_text(out / "data_sources.json", json.dumps(result, indent=2))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=512, help="objects per path")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    result = run(args.n, args.repeats, args.out)
    print(f"tiny CPU training consumes {result['training_objects_per_s']:.0f} objects/s (batch {result['batch_size']})")
    print(f"{'path':<8} {'workers':>7} {'objects/s':>10} {'x training':>10}")
    for row in result["rows"]:
        print(f"{row['path']:<8} {row['workers']:>7} {row['objects_per_s']:>10.0f} {row['x_training']:>10.1f}")
    print(f"written {args.out / 'data_sources.json'}")


if __name__ == "__main__":
    main()
