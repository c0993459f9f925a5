"""Discrete (codec) modalities: an integer code per position, e.g. a codebook index.

Tokens of a ``discrete`` modality are ``(N,)`` int64 codes in ``[0, vocab_size)`` (not
vectors); the model embeds them with a table, predicts logits over the codes and trains
them with cross-entropy. Codes come pre-tokenised in the record (``record[field]``), from a
:class:`Codebook` of our own (k-means of patch vectors, for offline use and benchmarks), or,
with ``codec: aion``, from a ``polymathic-aion`` codec (the ``aion`` extra).
"""

from __future__ import annotations

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.modalities.aion_codec import AIONCodec
from astropt.modalities.base import TokenizationError, Tokens, register


@register("discrete")
class DiscreteModality:
    """Tokeniser of integer code sequences (see module docstring)."""

    def __init__(self, config: ModalityConfig, codec: AIONCodec | None = None):
        """Args:
        codec: for ``codec: aion``, the adapter to use (default: one over the pretrained
            AION codec of ``config.codec_name``).
        """
        if config.kind != "discrete":
            raise ValueError(f"DiscreteModality needs kind 'discrete', got {config.kind!r}")
        self.config = config
        if codec is None and config.codec == "aion":
            codec = AIONCodec(config)
        self.codec = codec

    @staticmethod
    def token_sizes(config: ModalityConfig) -> tuple[int, int]:
        """One integer code per token; positions index a learned table."""
        return 1, 1

    def codes(self, obs, what: str = "discrete") -> torch.Tensor:
        """The ``(n,)`` int64 codes of one observation, checked against the vocabulary."""
        x = np.asarray(obs)
        if x.ndim != 1 or not (np.issubdtype(x.dtype, np.integer) or _integral(x)):
            raise TokenizationError(
                f"{what}: {self.config.name!r} needs a 1-d array of integer codes, got "
                f"shape {x.shape} dtype {x.dtype}"
            )
        x = x.astype(np.int64)
        n, v = len(x), self.config.vocab_size
        if n == 0 or n > self.config.max_tokens:
            raise TokenizationError(f"{what}: {n} codes; {self.config.name!r} takes 1..{self.config.max_tokens}")
        if x.min() < 0 or x.max() >= v:
            raise TokenizationError(
                f"{what}: codes must lie in [0, {v}) (vocab_size), got [{x.min()}, {x.max()}]"
            )
        return torch.from_numpy(x)

    def tokenize(self, obs, what: str = "discrete") -> Tokens:
        """Codes of one observation (raw data through the codec, if there is one)."""
        if self.codec is not None:  # a record (spectra: with their wavelengths) or the array
            record = obs if isinstance(obs, dict) else {"id": what, self.config.field: obs}
            obs = self.codec.encode_records([record])[0]
        codes = self.codes(obs, what)
        return Tokens(codes, torch.arange(len(codes)))

    def tokenize_records(self, records: list[dict]) -> Tokens:
        """Codes of a batch -> ``(B, n_max)`` int64, padded with 0 and masked when ragged
        (raw data through the codec first, one call per batch for images)."""
        field = self.config.field
        raw = self.codec.encode_records(records) if self.codec is not None else [r[field] for r in records]
        rows = [self.codes(x, f"object {r.get('id')!r}") for x, r in zip(raw, records, strict=True)]
        n = max(len(c) for c in rows)
        values = torch.zeros(len(rows), n, dtype=torch.int64)
        mask = torch.zeros(len(rows), n, dtype=torch.bool)
        for i, c in enumerate(rows):
            values[i, : len(c)] = c
            mask[i, : len(c)] = True
        positions = torch.arange(n).expand(len(rows), -1)
        return Tokens(values, positions, None if bool(mask.all()) else mask)

    def detokenize(self, tokens: Tokens | torch.Tensor) -> torch.Tensor:
        """The codes themselves (a codec's decoder, if any, maps them back to data)."""
        return tokens.values if isinstance(tokens, Tokens) else tokens


def _integral(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.floating) and bool(np.all(np.isfinite(x))) and bool(np.all(x == np.round(x)))


class Codebook:
    """A k-means codebook of token vectors: ``encode`` vectors -> nearest code, ``decode``
    codes -> centroids. Turns any continuous modality's tokens (e.g. image patches) into a
    discrete one."""

    def __init__(self, centroids: torch.Tensor):
        self.centroids = centroids.float()  # (K, D)

    @classmethod
    def fit(cls, vectors: torch.Tensor, k: int, iters: int = 20, seed: int = 0) -> Codebook:
        """Lloyd's k-means on ``(M, D)`` vectors, initialised with ``k`` distinct samples."""
        x = vectors.reshape(-1, vectors.shape[-1]).float()
        if len(x) < k:
            raise ValueError(f"a codebook of {k} codes needs at least {k} vectors, got {len(x)}")
        g = torch.Generator().manual_seed(seed)
        centroids = x[torch.randperm(len(x), generator=g)[:k]].clone()
        for _ in range(iters):
            codes = torch.cdist(x, centroids).argmin(1)
            sums = torch.zeros_like(centroids).index_add_(0, codes, x)
            counts = torch.bincount(codes, minlength=k).unsqueeze(1)
            # An empty cluster keeps its centroid rather than collapsing to zero.
            centroids = torch.where(counts > 0, sums / counts.clamp(min=1), centroids)
        return cls(centroids)

    def encode(self, vectors: torch.Tensor) -> torch.Tensor:
        """``(..., D)`` vectors -> ``(...)`` int64 codes of the nearest centroid."""
        flat = vectors.reshape(-1, vectors.shape[-1]).float()
        return torch.cdist(flat, self.centroids).argmin(1).reshape(vectors.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.centroids[codes]
