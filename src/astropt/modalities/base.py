"""The Modality protocol: how raw observation arrays become tokens and back.

A modality turns one observation (or a batch of them) into ``Tokens``: a ``(N, D)`` array
of token vectors, their positions, an optional validity mask, and the normalisation
statistics needed to invert the transform. Tokenisation is deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from astropt.config import TOKEN_SIZES, ModalityConfig
from astropt.errors import TokenizationError  # noqa: F401  (re-exported)


@dataclass
class Tokens:
    """Tokens of one modality, batched or not.

    Attributes:
        values: ``(..., N, D)`` float token vectors (``(..., N)`` int64 codes for a
            ``discrete`` modality).
        positions: ``(..., N)`` integer indices (learned table) or ``(..., N, P)`` coordinates.
        mask: ``(..., N)`` bool, True where a token is real (None: all real).
        stats: normalisation statistics needed by ``detokenize``.
    """

    values: torch.Tensor
    positions: torch.Tensor
    mask: torch.Tensor | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)


def as_batch(
    tokens: Tokens | torch.Tensor, stats: dict | None = None, unbatched_stats: tuple[str, ...] = ()
) -> tuple[torch.Tensor, dict[str, torch.Tensor], bool]:
    """The common start of every ``detokenize``: token values and stats with a batch axis.

    Args:
        tokens: a ``Tokens`` (its stats are used unless ``stats`` is given) or raw values.
        unbatched_stats: stat names that never carry a batch axis (e.g. an image's shape).

    Returns:
        ``(values (B, N, D), stats, single)``; ``single`` tells whether a batch axis was added.
    """
    if isinstance(tokens, Tokens):
        values, stats = tokens.values, tokens.stats if stats is None else stats
    else:
        values = tokens
    stats = dict(stats or {})
    single = values.ndim == 2
    if single:
        values = values.unsqueeze(0)
        stats = {k: (v if k in unbatched_stats else v.unsqueeze(0)) for k, v in stats.items()}
    return values, stats, single


class Modality(Protocol):
    """What every modality provides."""

    config: ModalityConfig

    def tokenize(self, obs: torch.Tensor) -> Tokens: ...

    def tokenize_records(self, records: list[dict]) -> Tokens:
        """Tokenise a batch of observation records -> ``(B, N, D)`` tokens (+ mask if ragged)."""
        ...

    def detokenize(self, tokens: Tokens) -> torch.Tensor: ...


_REGISTRY: dict[str, Callable[[ModalityConfig], Modality]] = {}


def register(kind: str) -> Callable[[type], type]:
    """Class decorator: register a modality implementation under ``kind``.

    Its ``token_sizes(config) -> (input_size, pos_input_size)`` becomes the rule the config
    derives (and checks) its token sizes by (``astropt.config.TOKEN_SIZES``).
    """

    def wrap(cls: type) -> type:
        _REGISTRY[kind] = cls
        TOKEN_SIZES[kind] = cls.token_sizes
        return cls

    return wrap


def build_modality(config: ModalityConfig) -> Modality:
    """Instantiate the tokeniser of a modality config."""
    # Import the implementations so that they register themselves.
    from astropt import modalities  # noqa: F401

    try:
        factory = _REGISTRY[config.kind]
    except KeyError:
        raise ValueError(
            f"modality {config.name!r}: unknown kind {config.kind!r}; known: {sorted(_REGISTRY)}"
        ) from None
    return factory(config)
