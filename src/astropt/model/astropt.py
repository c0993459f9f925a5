"""The AstroPT model: a GPT-style transformer over continuous-valued observation tokens.

A batch is a dict ``{name: (B, n, D) tokens, f"{name}_positions": (B, n) indices or
(B, n, P) coordinates, f"{name}_mask": optional (B, n) bool}`` for each modality. Each
modality has its own tokeniser encoder (data -> residual stream), position embedder and
decoder (residual stream -> data). Modalities are concatenated into one sequence
(optionally each after a learned begin token) and the transformer predicts the next token.

Objectives:
- ``ar``: the hidden state at position t, decoded by the decoder of token t+1's modality,
  predicts token t+1 (Huber loss). Across modalities, the first token of a modality is
  predicted from the position before it (the previous modality's last token, or its own
  begin token).
- ``mae``: hidden tokens are replaced by a learned mask token; with full attention, the
  hidden state at a masked position predicts that position's token.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from astropt.config import ModelConfig
from astropt.model.io import PretrainedMixin
from astropt.model.transformer import Block, KVCache, TokenMLP

log = logging.getLogger(__name__)

POOLS = ("mean", "mean_max", "mean_max_std", "last", "exp_decay", "none")


@dataclass
class Segment:
    """Where one modality's tokens sit in the assembled sequence."""

    name: str
    start: int  # index of the first data token (after the begin token, if any)
    length: int
    begin: bool  # a begin token sits at ``start - 1``


@dataclass
class Sequence:
    """An assembled input sequence: residual-stream inputs and their layout."""

    x: torch.Tensor  # (B, T, C)
    segments: list[Segment]
    key_mask: torch.Tensor | None  # (B, T) bool, True for real tokens; None if all real


class LearnedPositions(nn.Module):
    """A learned table indexed by token position (the reference's ``Embedder``)."""

    def __init__(self, size: int, n_embd: int):
        super().__init__()
        self.wpe = nn.Embedding(size, n_embd)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.wpe(positions)


class AstroPT(PretrainedMixin, nn.Module):
    """Transformer over the tokens of one or more modalities (see module docstring).

    ``AstroPT.from_pretrained(...)`` / ``model.save_pretrained(...)``: see
    ``astropt.model.io.PretrainedMixin``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config.n_embd
        self.encoders = nn.ModuleDict()
        self.embedders = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        for m in config.modalities:
            self.encoders[m.name] = TokenMLP(m.input_size, c, c, config.tokeniser, config.bias)
            self.decoders[m.name] = TokenMLP(c, m.input_size, c, config.tokeniser, config.bias, "decoder")
            if m.position == "learned":
                self.embedders[m.name] = LearnedPositions(config.block_size, c)
            else:
                self.embedders[m.name] = TokenMLP(m.pos_input_size, c, c, config.tokeniser, config.bias)
        if config.modality_tokens:
            self.begin_tokens = nn.ParameterDict(
                {m.name: nn.Parameter(torch.zeros(c)) for m in config.modalities}
            )
        if config.attn == "full":
            self.mask_token = nn.Parameter(torch.zeros(c))
        self.drop = nn.Dropout(config.dropout)
        causal = config.attn == "causal"
        self.blocks = nn.ModuleList(
            Block(c, config.n_head, config.dropout, config.bias, causal) for _ in range(config.n_layer)
        )
        self.ln_f = nn.LayerNorm(c, bias=config.bias)
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections that write into the residual stream by
        # 1/sqrt(2 * n_layer) so that the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        for p in getattr(self, "begin_tokens", {}).values():
            nn.init.normal_(p, std=0.02)
        if config.attn == "full":
            nn.init.normal_(self.mask_token, std=0.02)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, trainable_only: bool = False) -> int:
        """Number of parameters (only those with ``requires_grad`` when ``trainable_only``)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    # ------------------------------------------------------------------ assembly
    def modality_names(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """Names of the configured modalities present in ``batch``, in sequence order."""
        names = [m.name for m in self.config.ordered_modalities if m.name in batch]
        if not names:
            raise ValueError(
                f"batch has none of the model's modalities {[m.name for m in self.config.modalities]};"
                f" it has keys {sorted(batch)}"
            )
        return names

    def assemble(
        self,
        batch: dict[str, torch.Tensor],
        hide: dict[str, torch.Tensor] | None = None,
        names: list[str] | None = None,
    ) -> Sequence:
        """Embed each modality's tokens and positions and concatenate them.

        Args:
            batch: tokens/positions/masks per modality.
            hide: per modality ``(B, n)`` bool; True tokens are replaced by the mask token.
            names: modalities to use, in order (default: all present, configured order).
        """
        if names is None:
            names = self.modality_names(batch)
            if self.training and self.config.modality_order == "shuffle":
                # One order per batch; the begin tokens tell the model which modality follows.
                names = [names[i] for i in torch.randperm(len(names)).tolist()]
        parts, masks, segments = [], [], []
        start = 0
        any_mask = False
        for name in names:
            values = batch[name]
            b, n, _ = values.shape
            tok = self.encoders[name](values)
            if hide is not None and name in hide:
                tok = torch.where(hide[name].unsqueeze(-1), self.mask_token.to(tok.dtype), tok)
            positions = batch.get(f"{name}_positions")
            if positions is None:
                positions = torch.arange(n, device=values.device).expand(b, -1)
            x = tok + self.embedders[name](positions)
            mask = batch.get(f"{name}_mask")
            begin = self.config.modality_tokens
            if begin:
                x = torch.cat([self.begin_tokens[name].to(x.dtype).expand(b, 1, -1), x], dim=1)
                start += 1
                if mask is not None:
                    # The begin token is real when the modality has any real token.
                    mask = torch.cat([mask.any(dim=1, keepdim=True), mask], dim=1)
            if mask is not None:
                any_mask = True
            parts.append(x)
            masks.append(mask if mask is not None else torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
            segments.append(Segment(name, start, n, begin))
            start += n
        x = torch.cat(parts, dim=1)
        if x.shape[1] > self.config.block_size:
            raise ValueError(
                f"sequence of {x.shape[1]} tokens exceeds block_size {self.config.block_size}"
            )
        key_mask = torch.cat(masks, dim=1) if any_mask else None
        return Sequence(self.drop(x), segments, key_mask)

    # ------------------------------------------------------------------ trunk
    def run_blocks(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        upto: int | None = None,
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Run blocks ``0..upto`` (inclusive; all when None) over the residual stream."""
        last = len(self.blocks) - 1 if upto is None else upto
        for i, block in enumerate(self.blocks[: last + 1]):
            x = block(x, key_mask=key_mask, cache=None if caches is None else caches[i])
        return x

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        hide: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, Sequence]:
        """Final hidden states ``(B, T, C)`` (after ``ln_f``) and the sequence layout."""
        seq = self.assemble(batch, hide=hide)
        h = self.ln_f(self.run_blocks(seq.x, seq.key_mask))
        return h, seq

    def decode(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        """Map hidden states to token vectors of modality ``name``."""
        return self.decoders[name](hidden)

    def predict_all(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Decoder output at every position of each modality's segment.

        For a single-modality model output ``t`` is the prediction of token ``t + 1`` (the
        last one continues the sequence): the reference's ``forward`` outputs.
        """
        h, seq = self(batch)
        return {s.name: self.decode(s.name, h[:, s.start : s.start + s.length]) for s in seq.segments}

    # ------------------------------------------------------------------ objectives
    def ar_predictions(
        self, h: torch.Tensor, seq: Sequence, batch: dict[str, torch.Tensor]
    ) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
        """Next-token predictions aligned with their targets, per modality.

        Returns ``{name: (prediction, target, mask)}``; a modality's token ``j`` is
        predicted from sequence position ``start + j - 1``. The very first token of the
        sequence (no begin token) has no predictor and is skipped.
        """
        out = {}
        for s in seq.segments:
            first = 0 if s.start > 0 else 1
            hidden = h[:, s.start + first - 1 : s.start + s.length - 1]
            target = batch[s.name][:, first:]
            mask = batch.get(f"{s.name}_mask")
            out[s.name] = (self.decode(s.name, hidden), target, None if mask is None else mask[:, first:])
        return out

    def loss(
        self,
        batch: dict[str, torch.Tensor],
        objective: str = "ar",
        hide: dict[str, torch.Tensor] | None = None,
        weights: dict[str, torch.Tensor] | None = None,
        norm_targets: bool = False,
    ) -> torch.Tensor:
        """Training loss of a batch: mean over modalities of weighted Huber losses.

        Args:
            objective: ``ar`` (next token) or ``mae`` (masked tokens, needs ``hide``).
            hide: for ``mae``, per modality ``(B, n)`` bool of masked tokens.
            weights: optional per-modality ``(B, n)`` or ``(B, n, D)`` loss weights
                (e.g. inverse variances); multiplied into the element-wise loss. By
                default a batch's ``f"{name}_weights"`` entries are used.
            norm_targets: ``mae`` only: standardise each target token before the loss.
        """
        if objective == "ar":
            h, seq = self(batch)
            items = self.ar_predictions(h, seq, batch)
            offsets = {s.name: (0 if s.start > 0 else 1) for s in seq.segments}
        elif objective == "mae":
            if hide is None:
                raise ValueError("the mae objective needs a `hide` mask per modality")
            h, seq = self(batch, hide=hide)
            items = {}
            for s in seq.segments:
                pred = self.decode(s.name, h[:, s.start : s.start + s.length])
                target = batch[s.name]
                if norm_targets:
                    std, mean = torch.std_mean(target, dim=-1, keepdim=True)
                    target = (target - mean) / (std + 1e-6)
                mask = hide.get(s.name, torch.zeros(target.shape[:2], dtype=torch.bool, device=target.device))
                real = batch.get(f"{s.name}_mask")
                items[s.name] = (pred, target, mask if real is None else mask & real)
            offsets = {s.name: 0 for s in seq.segments}
        else:
            raise ValueError(f"unknown objective {objective!r}; use 'ar' or 'mae'")

        if weights is None:
            weights = {n: batch[f"{n}_weights"] for n in items if f"{n}_weights" in batch}
        total = h.new_zeros((), dtype=torch.float32)
        for name, (pred, target, mask) in items.items():
            elem = F.huber_loss(pred.float(), target.float(), reduction="none")
            if weights is not None and name in weights:
                w = weights[name][:, offsets[name] :]
                elem = elem * (w.unsqueeze(-1) if w.ndim == 2 else w)
            if mask is None:
                mod_loss = elem.mean()
            else:
                m = mask.unsqueeze(-1).to(elem.dtype)
                mod_loss = (elem * m).sum() / (m.sum() * elem.shape[-1]).clamp(min=1)
            total = total + mod_loss * self.config.modality(name).loss_weight
        return total / len(items)

    # ------------------------------------------------------------------ embeddings
    @torch.no_grad()
    def embed(
        self,
        batch: dict[str, torch.Tensor],
        layer: int | None = None,
        pool: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-modality embeddings from the output of block ``layer`` (no final LayerNorm).

        Runs the stack only up to ``layer`` (default: the config's, the middle block).
        ``pool``: ``mean`` / ``last`` / ``exp_decay`` over each modality's real tokens, or
        ``none`` for the token embeddings ``(B, n, C)``. With several modalities a ``joint``
        entry pools over all real tokens.
        """
        layer = self.config.default_embed_layer if layer is None else layer
        if not -len(self.blocks) <= layer < len(self.blocks):
            raise ValueError(f"layer {layer} out of range for a model of {len(self.blocks)} blocks")
        layer %= len(self.blocks)
        pool = pool or self.config.embed_pool
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {POOLS}")
        seq = self.assemble(batch)
        x = self.run_blocks(seq.x, seq.key_mask, upto=layer)
        out = {}
        for s in seq.segments:
            mask = batch.get(f"{s.name}_mask")
            out[s.name] = pool_tokens(x[:, s.start : s.start + s.length], pool, mask)
        if len(seq.segments) > 1 and pool != "none":
            out["joint"] = pool_tokens(x, "mean", seq.key_mask)
        return out

    @torch.no_grad()
    def embed_all_layers(self, batch: dict[str, torch.Tensor], pool: str = "mean") -> list[dict[str, torch.Tensor]]:
        """Embeddings after every block in one pass (for per-layer probing)."""
        seq = self.assemble(batch)
        x = seq.x
        per_layer = []
        for block in self.blocks:
            x = block(x, key_mask=seq.key_mask)
            layer_out = {}
            for s in seq.segments:
                mask = batch.get(f"{s.name}_mask")
                layer_out[s.name] = pool_tokens(x[:, s.start : s.start + s.length], pool, mask)
            if len(seq.segments) > 1:
                layer_out["joint"] = pool_tokens(x, "mean", seq.key_mask)
            per_layer.append(layer_out)
        return per_layer

    # ------------------------------------------------------------------ generation
    def new_caches(self, batch_size: int, max_len: int, like: torch.Tensor) -> list[KVCache]:
        """Empty key/value caches, one per block, for generating up to ``max_len`` tokens
        (on the device and dtype of ``like``)."""
        c = self.config
        return [
            KVCache.empty(batch_size, c.n_head, max_len, c.n_embd // c.n_head, like)
            for _ in range(c.n_layer)
        ]

    @torch.no_grad()
    def generate(
        self,
        batch: dict[str, torch.Tensor],
        target: str,
        n_new: int,
        temperature: float = 0.0,
        target_positions: torch.Tensor | None = None,
        use_cache: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Continue the sequence with ``n_new`` tokens of modality ``target``.

        If ``target`` is in ``batch`` its tokens are continued; otherwise a new segment of
        that modality is started after the given ones (cross-modal prediction).
        ``target_positions`` gives the positions of the new tokens (default: continuing
        indices). Gaussian noise of scale ``temperature`` is added to each prediction.

        Returns the ``(B, n_new, D)`` generated tokens.
        """
        if self.config.attn != "causal":
            raise ValueError("generation needs a causal model (attn='causal')")
        cfg_target = self.config.modality(target)
        names = [n for n in self.modality_names(batch) if n != target]
        if target in batch:
            names.append(target)
        ref = next(batch[n] for n in names) if names else None
        if ref is None:
            raise ValueError("generation needs at least one given token")
        b = ref.shape[0]
        n_given = batch[target].shape[1] if target in batch else 0
        if target_positions is None:
            if cfg_target.position != "learned":
                raise ValueError(f"modality {target!r} has continuous positions: pass target_positions")
            target_positions = torch.arange(n_given, n_given + n_new, device=ref.device).expand(b, -1)

        seq = self.assemble(batch, names=names)
        prefix = [seq.x]
        if target not in batch and self.config.modality_tokens:
            prefix.append(self.begin_tokens[target].to(seq.x.dtype).expand(b, 1, -1))
        x = torch.cat(prefix, dim=1)
        key_mask = seq.key_mask
        if key_mask is not None and x.shape[1] > key_mask.shape[1]:
            key_mask = torch.cat([key_mask, key_mask.new_ones(b, x.shape[1] - key_mask.shape[1])], dim=1)
        total = x.shape[1] + n_new - 1
        if total > self.config.block_size:
            raise ValueError(f"generation needs {total} positions > block_size {self.config.block_size}")

        def step_embed(token: torch.Tensor, i: int) -> torch.Tensor:
            pos = target_positions[:, i : i + 1]
            return self.encoders[target](token) + self.embedders[target](pos)

        out = []
        if use_cache:
            caches = self.new_caches(b, total, x)
            h = self.ln_f(self.run_blocks(x, key_mask, caches=caches))[:, -1:]
        for i in range(n_new):
            if not use_cache:
                h = self.ln_f(self.run_blocks(x, key_mask))[:, -1:]
            token = self.decode(target, h)
            if temperature > 0:
                noise = torch.randn(token.shape, generator=generator, device=token.device, dtype=token.dtype)
                token = token + temperature * noise
            out.append(token)
            if i == n_new - 1:
                break
            nxt = step_embed(token, i)
            if key_mask is not None:
                key_mask = torch.cat([key_mask, key_mask.new_ones(b, 1)], dim=1)
            if use_cache:
                h = self.ln_f(self.run_blocks(nxt, key_mask, caches=caches))
            else:
                x = torch.cat([x, nxt], dim=1)
        return torch.cat(out, dim=1)


def pooled_width(n_embd: int, pool: str) -> int:
    """Width of a pooled embedding: ``mean_max`` concatenates two ``n_embd`` vectors,
    ``mean_max_std`` three."""
    return {"mean_max": 2, "mean_max_std": 3}.get(pool, 1) * n_embd


def pool_tokens(x: torch.Tensor, pool: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pool ``(B, n, C)`` token embeddings over real tokens (``mask`` True) to ``(B, C)``."""
    if pool == "none":
        return x
    n = x.shape[1]
    if pool == "last":
        if mask is None:
            return x[:, -1]
        idx = (mask.long().cumsum(1).argmax(1)).clamp(min=0)
        return x[torch.arange(x.shape[0], device=x.device), idx]
    if pool in ("mean_max", "mean_max_std"):
        # The max over tokens keeps what a mean dilutes: the brightest/most extreme patch
        # features (core flux, bulge light); the spread over tokens adds how far the light
        # extends (size). Both measured to raise linear-probe R² (benchmarks/SCIENCE.md).
        peak = x if mask is None else x.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        mean = pool_tokens(x, "mean", mask)
        parts = [mean, peak.amax(1)]
        if pool == "mean_max_std":
            var = pool_tokens((x - mean.unsqueeze(1)).square(), "mean", mask)
            parts.append(var.clamp(min=0).sqrt())
        return torch.cat(parts, dim=-1)
    if pool == "mean":
        w = x.new_ones(1, n, 1)
    elif pool == "exp_decay":
        w = torch.logspace(0, -1, n, device=x.device, dtype=x.dtype).view(1, n, 1)
    else:
        raise ValueError(f"unknown pooling {pool!r}; choose from {POOLS}")
    if mask is not None:
        w = w * mask.unsqueeze(-1).to(x.dtype)
    return (x * w).sum(1) / w.sum(1).clamp(min=1e-12)
