"""Catalogue scalars (magnitudes, colours, metadata): one token per named quantity.

Token ``i`` holds quantity ``scalar_names[i]`` as a 1-vector, standardised with
``scalar_mean``/``scalar_std`` when the config gives them. Its position is the index ``i``,
so the model's learned position table acts as a per-name embedding. A missing or
non-finite value is a masked token (value 0).

A name is looked up as ``record["labels"][name]``, then ``record[name]``; ``field[i]``
takes element ``i`` of the array ``record[field]`` (e.g. ``photometry[2]``).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.errors import TokenizationError
from astropt.modalities.base import Tokens, register

_INDEXED = re.compile(r"^(?P<field>[^\[\]]+)\[(?P<index>-?\d+)\]$")


def lookup(record: dict, name: str) -> float:
    """The value of scalar ``name`` in an observation record (NaN if absent)."""
    labels = record.get("labels") or {}
    if name in labels:
        value = labels[name]
    elif name in record:
        value = record[name]
    elif (m := _INDEXED.match(name)) and m["field"] in record:
        array = np.asarray(record[m["field"]]).reshape(-1)
        index = int(m["index"])
        value = array[index] if -len(array) <= index < len(array) else np.nan
    else:
        return float("nan")
    try:
        return float(np.asarray(value, dtype=np.float64).reshape(()))
    except (TypeError, ValueError):
        raise TokenizationError(
            f"object {record.get('id')!r}: scalar {name!r} is not a number: {value!r}"
        ) from None


@register("scalars")
class ScalarsModality:
    """Tokeniser of named catalogue quantities (see module docstring)."""

    def __init__(self, config: ModalityConfig):
        if config.kind != "scalars":
            raise ValueError(f"ScalarsModality needs kind 'scalars', got {config.kind!r}")
        self.config = config
        self.names = list(config.scalar_names)
        n = len(self.names)
        self.mean = torch.tensor(config.scalar_mean or [0.0] * n, dtype=torch.float64)
        self.std = torch.tensor(config.scalar_std or [1.0] * n, dtype=torch.float64)

    @staticmethod
    def token_sizes(config: ModalityConfig) -> tuple[int, int]:
        """One number per token; positions index a learned per-name table."""
        return 1, 1

    def tokenize(self, values, what: str = "scalars") -> Tokens:
        """Tokenise a ``(n_names,)`` vector (NaN = missing) -> ``(n_names, 1)`` tokens."""
        x = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if x.shape != (len(self.names),):
            raise TokenizationError(f"{what}: expected {len(self.names)} values {self.names}, got shape {tuple(x.shape)}")
        tokens = self._tokens(x.unsqueeze(0))
        mask = None if tokens.mask is None else tokens.mask[0]
        return Tokens(tokens.values[0], tokens.positions[0], mask, {})

    def tokenize_records(self, records: list[dict]) -> Tokens:
        """Tokenise the scalars of a batch of records -> ``(B, n_names, 1)`` tokens."""
        table = np.array([[lookup(r, name) for name in self.names] for r in records], dtype=np.float64)
        return self._tokens(torch.from_numpy(table.reshape(len(records), len(self.names))))

    def _tokens(self, x: torch.Tensor) -> Tokens:
        present = torch.isfinite(x)
        values = torch.where(present, (x - self.mean) / self.std, 0.0).float().unsqueeze(-1)
        positions = torch.arange(len(self.names)).expand(x.shape[0], -1)
        return Tokens(values, positions, None if present.all() else present, {})

    def detokenize(self, tokens: Tokens | torch.Tensor, stats: dict | None = None) -> torch.Tensor:
        """Scalars from tokens: ``(n_names,)`` or ``(B, n_names)``; NaN where masked."""
        values = tokens.values if isinstance(tokens, Tokens) else tokens
        mask = tokens.mask if isinstance(tokens, Tokens) else None
        x = values[..., 0].double() * self.std + self.mean
        return x if mask is None else x.masked_fill(~mask, float("nan"))
