"""Tiny fixtures for the task tests: a random AstroPT model and a small labelled shard set."""

from __future__ import annotations

import numpy as np

from astropt.config import ModalityConfig, ModelConfig
from astropt.data.shards import ArraySpec, finalize, write_shard

IMAGE_SIZE = 16
BANDS = 2


def tiny_config(**overrides) -> ModelConfig:
    image = ModalityConfig(name="images", image_size=IMAGE_SIZE, n_channels=BANDS, patch_size=4)
    kwargs = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, modalities=[image])
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


def make_records(n: int, seed: int = 0, size: int = IMAGE_SIZE, bands: int = BANDS) -> list[dict]:
    """Gaussian blobs whose size and brightness follow the labels (so probes can learn)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    records = []
    for i in range(n):
        z = rng.uniform(0.05, 1.0)
        width = rng.uniform(1.0, 4.0)
        flux = 10 ** rng.uniform(0, 1)
        rare = i % 10 == 0
        blob = flux * np.exp(-(xx**2 + yy**2) / (2 * width**2))
        image = np.stack([blob * (1 + z * b) for b in range(bands)])
        if rare:
            image = image + 3 * flux * (np.abs(xx) < 1)  # a bright bar: the rare class
        image = image + rng.normal(0, 0.05, image.shape)
        records.append(
            {
                "id": f"obj{i:04d}",
                "image": image.astype(np.float32),
                "labels": {"redshift": z, "size": width, "flux": flux,
                           "kind": "bar" if rare else "normal", "const": 1.0},
            }
        )
    return records


def write_shards(directory, records, per_shard: int = 16):
    arrays = {"image": ArraySpec(list(records[0]["image"].shape))}
    entries = [
        write_shard(directory, k, records[s : s + per_shard], arrays)
        for k, s in enumerate(range(0, len(records), per_shard))
    ]
    labels = {"redshift": "float64", "size": "float64", "flux": "float64", "kind": "string", "const": "float64"}
    finalize(directory, entries, arrays, labels)
    return directory


def stop_after_parts(monkeypatch, n: int) -> list[int]:
    """Make ``embed`` stop (as if killed) right after its ``n``-th part is on disk; the list
    fills with the numbers of the parts written."""
    from astropt.tasks import embed as embed_module

    written: list[int] = []

    def hook(k: int) -> None:
        written.append(k)
        if len(written) == n:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(embed_module, "_part_written", hook)
    return written
