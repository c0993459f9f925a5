"""Baselines a foundation model's embeddings must beat (or approach).

(a) PCA of the stretched, normalised pixels; (b) the same transformer with random weights
(same embedding layer and pooling); (c) a small supervised CNN trained on the labels of the
training split: an upper reference, since it sees the labels the probes try to read.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.decomposition import PCA
from tqdm.auto import tqdm

from astropt.config import ModelConfig
from astropt.data.shards import ShardSet
from astropt.model import AstroPT
from astropt.tasks.common import image_field, iter_batches, model_batches, used_modalities
from astropt.tasks.embed import embed_batch

log = logging.getLogger(__name__)


def stretch_images(images: np.ndarray) -> np.ndarray:
    """``asinh`` of each image divided by its own per-band robust scale: ``(n, C, H, W)``."""
    x = np.asarray(images, dtype=np.float32)
    scale = np.percentile(np.abs(x), 99, axis=(2, 3), keepdims=True) + 1e-6
    return np.arcsinh(x / (0.1 * scale)).astype(np.float32)


def pixel_pca(images: np.ndarray, n_components: int = 64, seed: int = 0) -> np.ndarray:
    """(a) PCA features of the stretched pixels (unsupervised: no labels are used)."""
    x = stretch_images(images).reshape(len(images), -1)
    k = min(n_components, x.shape[0] - 1, x.shape[1])
    return PCA(k, random_state=seed).fit_transform(x)


def load_images(data: ShardSet, indices: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """The ``(n, C, H, W)`` images of ``indices`` (the first image field)."""
    field = image_field(data)
    return np.concatenate([rows[field] for _, rows in iter_batches(data, indices, batch_size)])


def random_transformer_embeddings(
    config: ModelConfig, data: ShardSet, indices: np.ndarray, seed: int = 0, batch_size: int = 128
) -> np.ndarray:
    """(b) Embeddings of ``indices`` from a freshly initialised model of the same config."""
    torch.manual_seed(seed)
    model = AstroPT(config).eval()
    configs = used_modalities(model, data)
    out = []
    for _, _, batch in model_batches(data, indices, batch_size, configs):
        out.append(embed_batch(model, batch)["embedding"])
    return np.concatenate(out)


class SmallCNN(nn.Module):
    """Three strided conv blocks, global average pooling, a linear multi-output head."""

    def __init__(self, channels: int, n_out: int, width: int = 24):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.BatchNorm2d(width), nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.BatchNorm2d(2 * width), nn.GELU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.BatchNorm2d(4 * width), nn.GELU(),
        )
        self.head = nn.Linear(4 * width, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] >= 64:
            # Halve large inputs first: 4x less compute, still resolves galaxy shapes on CPU.
            x = F.avg_pool2d(x, 2)
        return self.head(self.features(x).mean(dim=(2, 3)))


def supervised_cnn(
    train_images: np.ndarray,
    train_targets: np.ndarray,
    test_images: np.ndarray,
    epochs: int = 8,
    batch_size: int = 64,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """(c) Train a small CNN on standardised targets ``(n, k)``; predictions for the test images."""
    torch.manual_seed(seed)
    x_train = torch.from_numpy(stretch_images(train_images))
    x_test = torch.from_numpy(stretch_images(test_images))
    mean, std = train_targets.mean(0), train_targets.std(0) + 1e-12
    y = torch.from_numpy(((train_targets - mean) / std).astype(np.float32))
    net = SmallCNN(x_train.shape[1], y.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(x_train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    gen = torch.Generator().manual_seed(seed)
    net.train()
    for _ in tqdm(range(epochs), desc="baseline CNN", unit="epoch", disable=not progress):
        for idx in torch.randperm(len(x_train), generator=gen).split(batch_size):
            # Random flips and 90-degree turns: the labels do not depend on orientation.
            xb = torch.rot90(x_train[idx], int(torch.randint(4, (1,), generator=gen)), dims=(2, 3))
            loss = F.mse_loss(net(xb), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    net.eval()
    with torch.no_grad():
        pred = torch.cat([net(xb) for xb in x_test.split(256)]).numpy()
    return pred * std + mean
