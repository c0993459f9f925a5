"""Attention pooling trained with the probe (an "attentive probe", as in AIM and V-JEPA).

A fixed pooling (mean, max, std over tokens) decides before the probe sees a label which
tokens matter. The attentive probe learns it: a few learned queries attend over an object's
token embeddings (multi-head cross-attention), and a small MLP (or a linear layer) reads the
label off the pooled queries. Everything is fitted on the training objects of a fold only:

- inputs are standardised per feature (over the training objects and their tokens), regression
  targets to zero mean and unit variance;
- a seeded split of the training objects (``val_fraction``) stops the training early: the
  weights of the best validation loss are kept;
- full determinism for a given ``seed`` (initialisation, split and batch order are drawn from
  it, under a forked torch RNG so the caller's random state is untouched).

:class:`AttentionProbe` is a scikit-learn estimator on ``(n, tokens, width)`` arrays, so
:func:`astropt.tasks.probe.probe_target` runs it in the same fold loop, with the same metrics
and calibrated uncertainties, as the other probes.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.base import BaseEstimator
from torch import nn
from torch.nn import functional as F

from astropt.config import POOLS
from astropt.model.astropt import pool_tokens, pooled_width


@dataclass
class AttentionProbeConfig:
    """Shape and training of the attentive probe (defaults of ``astropt probe --probe attention``)."""

    queries: int = 4
    """Learned queries (attention heads); each pools the tokens with its own weights."""
    hidden: int = 64
    """Hidden units of the MLP read-out after the pooling; 0: a linear read-out (measured
    0.03-0.07 lower redshift R² on the science survey, benchmarks/SCIENCE.md)."""
    lr: float = 1e-2
    weight_decay: float = 1e-2
    batch_size: int = 128
    max_epochs: int = 300
    patience: int = 20
    """Epochs without a better validation loss before stopping."""
    val_fraction: float = 0.15
    """Share of the training objects held back for early stopping."""
    with_pool: str | None = None
    """A fixed pooling of :data:`astropt.config.POOLS` (e.g. ``mean_max_std``) whose vector
    the read-out sees next to the attention pools; None: the attention pools alone."""

    def __post_init__(self) -> None:
        if self.with_pool is not None and (self.with_pool not in POOLS or self.with_pool == "none"):
            raise ValueError(f"attention probe: with_pool must be one of {[p for p in POOLS if p != 'none']} "
                             f"or None, got {self.with_pool!r}")
        if self.queries < 1 or self.hidden < 0:
            raise ValueError(f"attention probe: queries must be >= 1 and hidden >= 0, got {self}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"attention probe: val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError(f"attention probe: max_epochs, patience, batch_size and lr must be positive, got {self}")


class AttentionPool(nn.Module):
    """Learned queries attending over token embeddings, then a read-out: ``(B, T, C) -> (B, out)``.

    Query ``h`` scores token ``t`` by ``q_h · x_t`` and pools ``Σ_t softmax_t(q_h · x) x_t``;
    the read-out sees the ``queries`` pooled tokens side by side (and, with ``with_pool``, a
    fixed pooling of the tokens too). Key and value projections
    are left out on purpose: with one query per head, ``q · W_k x = (W_kᵀ q) · x`` and a value
    projection is absorbed by the linear read-out, so they add no expressiveness here, only
    cost (the projection of every token was 30x the compute of the whole head). The queries
    start near zero: uniform attention, i.e. mean pooling, which training then sharpens.
    """

    def __init__(self, width: int, out: int, cfg: AttentionProbeConfig) -> None:
        super().__init__()
        self.queries = nn.Parameter(torch.randn(cfg.queries, width) * width**-0.5)
        self.with_pool = cfg.with_pool
        pooled = cfg.queries * width + (pooled_width(width, cfg.with_pool) if cfg.with_pool else 0)
        self.head = (nn.Linear(pooled, out) if cfg.hidden == 0
                     else nn.Sequential(nn.Linear(pooled, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, out)))

    def attention(self, tokens: torch.Tensor) -> torch.Tensor:
        """Attention weights ``(B, queries, T)`` of each query over the tokens."""
        return torch.softmax(torch.einsum("btc,qc->bqt", tokens, self.queries), dim=-1)

    def pool(self, tokens: torch.Tensor) -> torch.Tensor:
        pooled = torch.einsum("bqt,btc->bqc", self.attention(tokens), tokens).flatten(1)
        return torch.cat([pooled, pool_tokens(tokens, self.with_pool)], 1) if self.with_pool else pooled

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.pool(tokens))


class AttentionProbe(BaseEstimator):
    """Scikit-learn estimator of one label from token embeddings ``(n, T, C)``: a regressor,
    or a classifier with ``classify=True`` (predicts the class labels seen in ``fit``)."""

    def __init__(self, config: AttentionProbeConfig | None = None, classify: bool = False, seed: int = 0) -> None:
        self.config = config
        self.classify = classify
        self.seed = seed

    # ------------------------------------------------------------------ sklearn API
    def fit(self, x: np.ndarray, y: np.ndarray) -> AttentionProbe:
        cfg = self.config or AttentionProbeConfig()
        x = _check_tokens(x)
        self.mean_ = x.mean(axis=(0, 1))
        self.scale_ = x.std(axis=(0, 1)) + 1e-6
        if self.classify:
            self.classes_, target = np.unique(np.asarray(y), return_inverse=True)
            t = torch.from_numpy(target.astype(np.int64))
            out = len(self.classes_)
        else:
            y = np.asarray(y, np.float64)
            self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std() + 1e-12)
            t = torch.from_numpy(((y - self.y_mean_) / self.y_scale_).astype(np.float32)).unsqueeze(1)
            out = 1
        with torch.random.fork_rng(devices=[]), one_thread():
            torch.manual_seed(self.seed)
            self.module_ = AttentionPool(x.shape[2], out, cfg)
            self.epochs_ = _train(self.module_, self._inputs(x), t, cfg, self.classify,
                                  np.random.default_rng(self.seed))
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self._forward(x)
        if self.classify:
            return self.classes_[out.argmax(1)]
        return out[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_

    def transform(self, x: np.ndarray) -> np.ndarray:
        """The learned pooled representation ``(n, queries * width)`` of token embeddings."""
        self.module_.eval()
        with torch.no_grad(), one_thread():
            return np.concatenate([self.module_.pool(b).numpy() for b in _chunks(self._inputs(_check_tokens(x)))])

    # ------------------------------------------------------------------ internals
    def _inputs(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean_) / self.scale_).astype(np.float32))

    def _forward(self, x: np.ndarray) -> np.ndarray:
        self.module_.eval()
        with torch.no_grad(), one_thread():
            return np.concatenate([self.module_(b).numpy() for b in _chunks(self._inputs(_check_tokens(x)))])


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread: the head is too small for intra-op parallelism to pay, and on
    shared cores it costs (one fit measured 12x slower with 2 threads than with 1 on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_tokens(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    if x.ndim != 3:
        raise ValueError(f"the attention probe needs token embeddings (objects, tokens, width), got shape {x.shape}")
    return x


def _chunks(x: torch.Tensor, size: int = 1024) -> list[torch.Tensor]:
    return [x[i : i + size] for i in range(0, len(x), size)]


def _loss(module: nn.Module, x: torch.Tensor, t: torch.Tensor, classify: bool) -> torch.Tensor:
    out = module(x)
    return F.cross_entropy(out, t) if classify else F.mse_loss(out, t)


def _train(module: AttentionPool, x: torch.Tensor, t: torch.Tensor, cfg: AttentionProbeConfig, classify: bool,
           rng: np.random.Generator) -> int:
    """AdamW on minibatches with early stopping on a held-back split; keeps the best weights.
    Returns the number of epochs run."""
    order = rng.permutation(len(x))
    n_val = min(max(1, round(cfg.val_fraction * len(x))), len(x) - 1)
    val, train = torch.from_numpy(order[:n_val]), order[n_val:]
    opt = torch.optim.AdamW(module.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best, best_state, stale, epochs = float("inf"), copy.deepcopy(module.state_dict()), 0, 0
    while epochs < cfg.max_epochs and stale < cfg.patience:
        epochs += 1
        module.train()
        for start in range(0, len(train), cfg.batch_size):
            idx = torch.from_numpy(train[start : start + cfg.batch_size])
            opt.zero_grad()
            _loss(module, x[idx], t[idx], classify).backward()
            opt.step()
        rng.shuffle(train)
        module.eval()
        with torch.no_grad():
            loss = float(_loss(module, x[val], t[val], classify))
        if loss < best - 1e-6:
            best, best_state, stale = loss, copy.deepcopy(module.state_dict()), 0
        else:
            stale += 1
    module.load_state_dict(best_state)
    return epochs
