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

Continuous tokens are trained with a Huber loss; ``discrete`` modalities (integer codes) and
the LLM backbone's ``text`` ids with cross-entropy. A batch's ``text`` may come as strings
(captions, catalogue lines; ``model.text``): the LLM's tokenizer turns them into ids between
``<|begin_text|>`` and ``<|end_text|>`` (:meth:`AstroPT.tokenize_text`). The trunk is a backbone (see
:mod:`astropt.model.backbones`): our GPT blocks, or a Hugging Face causal LM.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from astropt.config import POOLS, ModelConfig
from astropt.model.backbones import TEXT, LLMBackbone, NativeBackbone
from astropt.model.io import PretrainedMixin
from astropt.model.transformer import Block, KVCache, TokenMLP

log = logging.getLogger(__name__)


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

    def __init__(self, config: ModelConfig, llm_files: str | None = None):
        """Args:
        llm_files: for ``backbone: llm``, a saved model's ``llm`` folder to build the LLM
            from (instead of ``config.llm``'s hub model or built one).
        """
        super().__init__()
        self.config = config
        c = config.n_embd
        llm = config.backbone == "llm"
        self.encoders = nn.ModuleDict()
        self.embedders = nn.ModuleDict()
        self.decoders = nn.ModuleDict()
        for m in config.modalities:
            if m.kind == "discrete":  # a code table in, logits over the codes out
                self.encoders[m.name] = nn.Embedding(m.vocab_size, c)
            else:
                self.encoders[m.name] = TokenMLP(m.input_size, c, c, config.tokeniser, config.bias)
            out_size = m.vocab_size if m.kind == "discrete" else m.input_size
            self.decoders[m.name] = TokenMLP(c, out_size, c, config.tokeniser, config.bias, "decoder")
            if m.position == "learned":
                self.embedders[m.name] = LearnedPositions(config.block_size, c)
            else:
                self.embedders[m.name] = TokenMLP(m.pos_input_size, c, c, config.tokeniser, config.bias)
        if config.modality_tokens and not llm:  # the LLM has its <|begin_m|> tokens
            self.begin_tokens = nn.ParameterDict(
                {m.name: nn.Parameter(torch.zeros(c)) for m in config.modalities}
            )
        if config.attn == "full" or config.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(c))
        self.drop = nn.Dropout(config.dropout)
        causal = config.attn == "causal"
        n_native = 0 if llm else config.n_layer
        self.blocks = nn.ModuleList(
            Block(c, config.n_head, config.dropout, config.bias, causal) for _ in range(n_native)
        )
        self.ln_f = None if llm else nn.LayerNorm(c, bias=config.bias)
        self.apply(self._init_weights)
        # GPT-2: scale the init of projections that write into the residual stream by
        # 1/sqrt(2 * n_layer) so that the stream's variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        for p in getattr(self, "begin_tokens", {}).values():
            nn.init.normal_(p, std=0.02)
        if config.attn == "full" or config.mask_token:
            nn.init.normal_(self.mask_token, std=0.02)
        # Built after the init above, which must not touch the LLM's (pretrained) weights.
        self.llm = LLMBackbone(config, llm_files) if llm else None

    @property
    def backbone(self) -> NativeBackbone | LLMBackbone:
        """The trunk: our blocks or the LLM (one interface, see ``model.backbones``)."""
        return self.llm if self.llm is not None else NativeBackbone(self.blocks, self.ln_f, self.config)

    def save_backbone_files(self, directory) -> None:
        """Files the weights need beside them (the LLM's config and tokenizer)."""
        if self.llm is not None:
            self.llm.save_files(directory)

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
    def tokenize_text(self, batch: dict) -> dict:
        """``batch`` with its ``text`` strings (if any) replaced by the LLM's ids and
        ``text_mask``. The tokenizer lives with the weights, so text is tokenised here."""
        text = batch.get(TEXT)
        if text is None or isinstance(text, torch.Tensor):
            return batch
        if self.llm is None:
            raise ValueError(
                "the batch carries text but this model has the native backbone, which has no text "
                "vocabulary; text needs model.backbone: llm (see configs/llm-tiny-text.yaml)"
            )
        device = self.llm.base().get_input_embeddings().weight.device
        ids, mask = self.llm.text_ids(list(text), self.config.text.max_tokens, device)
        return {**batch, TEXT: ids, f"{TEXT}_mask": mask}

    def modality_names(self, batch: dict[str, torch.Tensor]) -> list[str]:
        """Names of the configured modalities present in ``batch``, in sequence order."""
        names = [m.name for m in self.config.ordered_modalities if m.name in batch]
        if self.llm is not None and TEXT in batch:
            names.append(TEXT)  # text (caption, catalogue line) follows the observations
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
            b, n = values.shape[:2]
            x = self.embed_tokens(name, values, batch.get(f"{name}_positions"),
                                  None if hide is None else hide.get(name))
            mask = batch.get(f"{name}_mask")
            begin = self.config.modality_tokens and name != TEXT
            if begin:
                x = torch.cat([self.begin_token(name).to(x.dtype).expand(b, 1, -1), x], dim=1)
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

    def embed_tokens(
        self,
        name: str,
        values: torch.Tensor,
        positions: torch.Tensor | None = None,
        hide: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Residual-stream inputs ``(B, n, C)`` of one modality's tokens: encoder (the LLM's
        embeddings for text, whose positions are the LLM's own) + position embedding."""
        if name == TEXT:
            return self.llm.token_embeddings(values)
        tok = self.encoders[name](values)
        if hide is not None:
            tok = torch.where(hide.unsqueeze(-1), self.mask_token.to(tok.dtype), tok)
        if positions is None:
            b, n = values.shape[:2]
            positions = torch.arange(n, device=values.device).expand(b, -1)
        return tok + self.embedders[name](positions)

    def begin_token(self, name: str) -> torch.Tensor:
        """``(C,)`` token that opens modality ``name``'s segment."""
        if self.llm is not None:
            return self.llm.special_embedding("begin", name)
        return self.begin_tokens[name]

    # ------------------------------------------------------------------ trunk
    def run_blocks(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        upto: int | None = None,
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """Run blocks ``0..upto`` (inclusive; all when None) over the residual stream."""
        return self.backbone.run(x, key_mask, upto, caches)

    def final_hidden(self, x: torch.Tensor, key_mask: torch.Tensor | None = None, caches=None,
                     causal: bool | None = None) -> torch.Tensor:
        """All blocks and the final norm: the hidden states the decoders read (``causal``:
        this call's attention mask; None: ``model.attn``)."""
        return self.backbone.final(x, key_mask, caches, causal=causal)

    def forward(
        self,
        batch: dict[str, torch.Tensor],
        hide: dict[str, torch.Tensor] | None = None,
        causal: bool | None = None,
    ) -> tuple[torch.Tensor, Sequence]:
        """Final hidden states ``(B, T, C)`` (after ``ln_f``) and the sequence layout
        (``causal=False``: full attention in this call, whatever ``model.attn``)."""
        seq = self.assemble(self.tokenize_text(batch), hide=hide)
        return self.final_hidden(seq.x, seq.key_mask, causal=causal), seq

    def decode(self, name: str, hidden: torch.Tensor) -> torch.Tensor:
        """Map hidden states to token vectors (logits, for discrete codes and text) of ``name``."""
        if name == TEXT:
            return self.llm.logits(hidden)
        return self.decoders[name](hidden)

    def is_discrete(self, name: str) -> bool:
        """Whether ``name``'s tokens are integer ids (cross-entropy, sampled in generation)."""
        return name == TEXT or self.config.modality(name).kind == "discrete"

    def loss_weight(self, name: str) -> float:
        """Weight of modality ``name`` (or the LLM's text) in the training loss."""
        return self.config.llm.text_loss_weight if name == TEXT else self.config.modality(name).loss_weight

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
        per_object: bool = False,
        mae_weight: float = 1.0,
    ) -> torch.Tensor:
        """Training loss of a batch: mean over modalities of weighted Huber losses.

        Args:
            objective: ``ar`` (next token), ``mae`` (masked tokens, needs ``hide``) or
                ``ar_mae``: the AR loss plus ``mae_weight`` x the masked-token loss of the
                same batch, the masked branch with full attention (whatever ``model.attn``).
            hide: for ``mae`` / ``ar_mae``, per modality ``(B, n)`` bool of masked tokens.
            weights: optional per-modality ``(B, n)`` or ``(B, n, D)`` loss weights
                (e.g. inverse variances); multiplied into the element-wise loss. By
                default a batch's ``f"{name}_weights"`` entries are used.
            norm_targets: masked tokens only: standardise each target token before the loss.
            per_object: return the ``(B,)`` loss of each object (its real tokens' mean, per
                modality, then the weighted mean over modalities) instead of the batch's
                (every real token of the batch counts once).
            mae_weight: ``ar_mae`` only: the weight of the masked-token loss.
        """
        batch = self.tokenize_text(batch)
        if objective == "ar_mae":
            ar = self._objective_loss(batch, "ar", None, weights, norm_targets, per_object)
            masked = self._objective_loss(batch, "mae", hide, weights, norm_targets, per_object, causal=False)
            return ar + mae_weight * masked
        return self._objective_loss(batch, objective, hide, weights, norm_targets, per_object)

    def _objective_loss(self, batch, objective, hide, weights, norm_targets, per_object, causal=None) -> torch.Tensor:
        if objective == "ar":
            h, seq = self(batch)
            items = self.ar_predictions(h, seq, batch)
            offsets = {s.name: (0 if s.start > 0 else 1) for s in seq.segments}
        elif objective == "mae":
            if hide is None:
                raise ValueError("the mae objective needs a `hide` mask per modality")
            if "mask_token" not in self._parameters:
                raise ValueError("this model has no mask token to hide tokens with: build it with "
                                 "model.mask_token: true (objective ar_mae sets it) or attn: full")
            h, seq = self(batch, hide=hide, causal=causal)
            items = {}
            for s in seq.segments:
                pred = self.decode(s.name, h[:, s.start : s.start + s.length])
                target = batch[s.name]
                if norm_targets and not self.is_discrete(s.name):
                    std, mean = torch.std_mean(target, dim=-1, keepdim=True)
                    target = (target - mean) / (std + 1e-6)
                mask = hide.get(s.name, torch.zeros(target.shape[:2], dtype=torch.bool, device=target.device))
                real = batch.get(f"{s.name}_mask")
                items[s.name] = (pred, target, mask if real is None else mask & real)
            offsets = {s.name: 0 for s in seq.segments}
        else:
            raise ValueError(f"unknown objective {objective!r}; use 'ar', 'mae' or 'ar_mae'")
        return self._reduce(batch, items, offsets, weights, per_object, h)

    def _reduce(self, batch, items, offsets, weights, per_object, h) -> torch.Tensor:
        if weights is None:
            weights = {n: batch[f"{n}_weights"] for n in items if f"{n}_weights" in batch}
        total = h.new_zeros((), dtype=torch.float32)
        for name, (pred, target, mask) in items.items():
            if self.is_discrete(name):  # (B, n, V) logits vs (B, n) ids -> (B, n, 1)
                elem = F.cross_entropy(pred.float().transpose(1, 2), target.long(), reduction="none").unsqueeze(-1)
            else:
                elem = F.huber_loss(pred.float(), target.float(), reduction="none")
            if weights is not None and name in weights:
                w = weights[name][:, offsets[name] :]
                elem = elem * (w.unsqueeze(-1) if w.ndim == 2 else w)
            if per_object:
                per_token = elem.mean(-1)  # (B, n)
                m = torch.ones_like(per_token) if mask is None else mask.to(per_token.dtype)
                mod_loss = (per_token * m).sum(1) / m.sum(1).clamp(min=1)
            elif mask is None:
                mod_loss = elem.mean()
            else:
                m = mask.unsqueeze(-1).to(elem.dtype)
                mod_loss = (elem * m).sum() / (m.sum() * elem.shape[-1]).clamp(min=1)
            total = total + mod_loss * self.loss_weight(name)
        return total / len(items)

    # ------------------------------------------------------------------ embeddings
    def features(
        self,
        batch: dict[str, torch.Tensor],
        layers: list[int] | None = None,
        pool: str | None = None,
    ) -> list[dict[str, torch.Tensor]]:
        """Pooled hidden states after each block of ``layers`` (no final LayerNorm).

        The one embedding computation behind :meth:`embed`, :meth:`embed_all_layers` and
        the finetuning heads; it keeps gradients (the callers decide). The stack runs only
        up to the deepest block asked for.

        Args:
            layers: block indices (negative from the end; default: the config's
                embedding layer, the middle block).
            pool: one of ``POOLS`` (default: the config's ``embed_pool``).

        Returns:
            Per layer, ``{modality: (B, width)}`` pooled over that modality's real tokens
            (``(B, n, C)`` for ``none``); with several modalities and a pooling, ``joint``
            is the mean over every real token of the sequence, whatever ``pool``.
        """
        pool = self._check_pool(pool)
        layers = [self._check_layer(k) for k in (layers or [self.config.default_embed_layer])]
        batch = self.tokenize_text(batch)
        seq = self.assemble(batch)
        pooled = {}
        for i, x in enumerate(self.backbone.layers(seq.x, seq.key_mask)):
            if i in layers:
                pooled[i] = self._pool_segments(x, seq, batch, pool)
            if i == max(layers):
                break
        return [pooled[k] for k in layers]

    def _pool_segments(
        self, x: torch.Tensor, seq: Sequence, batch: dict[str, torch.Tensor], pool: str
    ) -> dict[str, torch.Tensor]:
        out = {}
        for s in seq.segments:
            out[s.name] = pool_tokens(x[:, s.start : s.start + s.length], pool, batch.get(f"{s.name}_mask"))
        if len(seq.segments) > 1 and pool != "none":
            out["joint"] = pool_tokens(x, "mean", seq.key_mask)
        return out

    def _check_layer(self, layer: int) -> int:
        n_layer = self.config.n_layer
        if not -n_layer <= layer < n_layer:
            raise ValueError(f"layer {layer} out of range for a model of {n_layer} blocks")
        return layer % n_layer

    def _check_pool(self, pool: str | None) -> str:
        pool = pool or self.config.embed_pool
        if pool not in POOLS:
            raise ValueError(f"unknown pooling {pool!r}; choose from {POOLS}")
        return pool

    def feature_width(self, pool: str | None, names: list[str], layer: int | None = None) -> int:
        """Width of the main embedding (:func:`astropt.model.astropt.main_embedding`) of
        modalities ``names``: of block ``layer``, or (None) the default embedding."""
        pool = self._check_pool(pool)
        if pool == "none":
            raise ValueError("pool 'none' gives token embeddings (B, n, C), not one vector per object")
        one = self.config.n_embd if len(names) > 1 else pooled_width(self.config.n_embd, pool)
        return one * (len(self.config.embed_layers) if layer is None and self.config.embed_layers else 1)

    def embedding_features(
        self, batch: dict[str, torch.Tensor], layer: int | None = None, pool: str | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-modality embeddings of block ``layer`` or (None) the default embedding: block
        ``embed_layer``'s, or the blocks of ``embed_layers`` concatenated in that order along
        the last axis. Keeps gradients (:meth:`embed` is its no-grad form)."""
        layers = [layer] if layer is not None else (self.config.embed_layers or None)
        per_layer = self.features(batch, layers, pool)
        if len(per_layer) == 1:
            return per_layer[0]
        return {k: torch.cat([d[k] for d in per_layer], dim=-1) for k in per_layer[0]}

    def inference_copy(self, dtype: torch.dtype, compile: bool = False) -> AstroPT:
        """This model for inference in ``dtype``: itself for fp32, else an eval-mode copy with
        its weights cast once to ``dtype`` (run it under ``astropt.runtime.autocast``,
        which then casts only the inputs). The caller's model is never changed.

        ``compile``: the copy's blocks are compiled (``torch.compile``, each on its first call:
        seconds per batch shape; measured 1.02x on the bf16 embedding of the 24M model on 2 CPU
        cores once the allocator is tuned (1.7x against glibc's defaults); more kernels fuse
        on a GPU)."""
        if (dtype == torch.float32 and not compile) or self.config.backbone == "llm":
            return self
        import copy

        runner = copy.deepcopy(self).to(dtype).eval()
        if compile:
            # one graph per block and batch shape (a survey's last batch is smaller)
            limit = torch._dynamo.config.recompile_limit
            torch._dynamo.config.recompile_limit = max(limit, 2 * len(runner.blocks) + 2)
            for block in runner.blocks:
                block.compile(dynamic=False)
        return runner

    @torch.no_grad()
    def embed(
        self,
        batch: dict[str, torch.Tensor],
        layer: int | None = None,
        pool: str | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-modality embeddings from the output of block ``layer`` (see :meth:`features`);
        None: the default embedding (``embed_layers`` concatenated, when set; see
        :meth:`embedding_features`).

        ``pool``: ``mean`` / ``mean_max`` / ``mean_max_std`` / ``last`` / ``exp_decay`` over
        each modality's real tokens, or ``none`` for the token embeddings ``(B, n, C)``.
        """
        return self.embedding_features(batch, layer, pool)

    @torch.no_grad()
    def embed_all_layers(self, batch: dict[str, torch.Tensor], pool: str = "mean") -> list[dict[str, torch.Tensor]]:
        """Embeddings after every block in one pass (for per-layer probing)."""
        return self.features(batch, list(range(self.config.n_layer)), pool)

    # ------------------------------------------------------------------ generation
    def new_caches(self, batch_size: int, max_len: int, like: torch.Tensor) -> list[KVCache]:
        """Empty key/value caches of the backbone for generating up to ``max_len`` tokens
        (on the device and dtype of ``like``)."""
        return self.backbone.new_caches(batch_size, max_len, like)

    def sample(self, name: str, h: torch.Tensor, temperature: float, top_k: int | None,
               generator: torch.Generator | None) -> torch.Tensor:
        """The next token of ``name`` from hidden states ``(B, 1, C)``.

        Continuous: the decoder's prediction plus Gaussian noise of scale ``temperature``.
        Discrete codes / text: ``(B, 1)`` ids, the argmax at temperature 0, else drawn from
        the softmax of ``logits / temperature`` restricted to the ``top_k`` most likely.
        """
        out = self.decode(name, h)
        if not self.is_discrete(name):
            if temperature > 0:
                noise = torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype)
                out = out + temperature * noise
            return out
        logits = out[:, -1].float()
        if temperature <= 0:
            return logits.argmax(-1, keepdim=True)
        logits = logits / temperature
        if top_k:
            kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)

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
        top_k: int | None = None,
    ) -> torch.Tensor:
        """Continue the sequence with ``n_new`` tokens of modality ``target``.

        If ``target`` is in ``batch`` its tokens are continued; otherwise a new segment of
        that modality is started after the given ones (cross-modal prediction).
        ``target_positions`` gives the positions of the new tokens (default: continuing
        indices). Tokens are drawn by :meth:`sample` (``temperature``, ``top_k``); with the
        LLM backbone ``target`` may be ``text`` (see :meth:`generate_text`).

        Returns the ``(B, n_new, D)`` generated tokens (``(B, n_new)`` ids when discrete).
        """
        if self.config.attn != "causal":
            raise ValueError("generation needs a causal model (attn='causal')")
        batch = self.tokenize_text(batch)
        names = [n for n in self.modality_names(batch) if n != target]
        if target in batch:
            names.append(target)
        ref = next(batch[n] for n in names) if names else None
        if ref is None:
            raise ValueError("generation needs at least one given token")
        b = ref.shape[0]
        n_given = batch[target].shape[1] if target in batch else 0
        if target_positions is None and target != TEXT:
            if self.config.modality(target).position != "learned":
                raise ValueError(f"modality {target!r} has continuous positions: pass target_positions")
            target_positions = torch.arange(n_given, n_given + n_new, device=ref.device).expand(b, -1)

        seq = self.assemble(batch, names=names)
        prefix = [seq.x]
        if target not in batch and self.config.modality_tokens and target != TEXT:
            prefix.append(self.begin_token(target).to(seq.x.dtype).expand(b, 1, -1))
        x = torch.cat(prefix, dim=1)
        key_mask = seq.key_mask
        if key_mask is not None and x.shape[1] > key_mask.shape[1]:
            key_mask = torch.cat([key_mask, key_mask.new_ones(b, x.shape[1] - key_mask.shape[1])], dim=1)
        total = x.shape[1] + n_new - 1
        if total > self.config.block_size:
            raise ValueError(f"generation needs {total} positions > block_size {self.config.block_size}")

        def step_embed(token: torch.Tensor, i: int) -> torch.Tensor:
            pos = None if target_positions is None else target_positions[:, i : i + 1]
            return self.embed_tokens(target, token, pos)

        out = []
        if use_cache:
            caches = self.new_caches(b, total, x)
            h = self.final_hidden(x, key_mask, caches=caches)[:, -1:]
        for i in range(n_new):
            if not use_cache:
                h = self.final_hidden(x, key_mask)[:, -1:]
            token = self.sample(target, h, temperature, top_k, generator)
            out.append(token)
            if i == n_new - 1:
                break
            nxt = step_embed(token, i)
            if key_mask is not None:
                key_mask = torch.cat([key_mask, key_mask.new_ones(b, 1)], dim=1)
            if use_cache:
                h = self.final_hidden(nxt, key_mask, caches=caches)
            else:
                x = torch.cat([x, nxt], dim=1)
        return torch.cat(out, dim=1)

    @torch.no_grad()
    def generate_text(
        self,
        batch: dict[str, torch.Tensor],
        prompt: str = "",
        max_new_tokens: int = 20,
        temperature: float = 0.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> list[str]:
        """LLM backbone: answer in text after the observation tokens of ``batch``.

        ``prompt`` follows the observations (after ``<|begin_text|>`` when the model has
        ``model.text``, e.g. ``"redshift"``; else as it is, e.g. ``"<|end_images|> redshift"``);
        the answer is drawn as in :meth:`generate` and cut at ``<|end_text|>`` or the
        tokenizer's end-of-text token.
        """
        if self.llm is None:
            raise ValueError("generate_text needs model.backbone: llm (a language model)")
        ref = batch[self.modality_names(batch)[0]]
        batch = {k: v for k, v in batch.items() if k not in (TEXT, f"{TEXT}_mask")}
        if self.config.text.enabled:
            ids, _ = self.llm.text_ids([prompt], self.config.text.max_tokens, ref.device)
            batch[TEXT] = ids[:, :-1].expand(ref.shape[0], -1)  # open: no <|end_text|>
        elif prompt:
            ids, _ = self.llm.encode_text([prompt], ref.device)
            batch[TEXT] = ids.expand(ref.shape[0], -1)
        ids = self.generate(batch, TEXT, max_new_tokens, temperature, top_k=top_k, generator=generator)
        return [self.llm.decode_text(row) for row in ids.tolist()]


def main_embedding(features: dict[str, torch.Tensor]) -> torch.Tensor:
    """The one vector per object of :meth:`astropt.AstroPT.features`: ``joint`` of a multimodal
    batch, the only modality's otherwise (the embed task's ``embedding`` column)."""
    return features["joint"] if "joint" in features else next(iter(features.values()))


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
