"""Transformer building blocks: attention (SDPA, causal/full, padding masks, KV cache),
MLP, pre-LayerNorm block, and the token MLP used by tokeniser encoders/decoders.

Parameter names follow nanoGPT/the reference (``c_attn``, ``c_proj``, ``c_fc``, ``ln_1``),
so that published checkpoints map onto these modules one to one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from astropt.model.attention import attention


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (GPT-2 / the reference's ``new_gelu``).

    In bf16 on a CPU the exact (erf) form is computed instead: its error against the exact
    tanh form is that of torch's bf16 tanh kernel (mean 0.00095 against 0.00089 on N(0, 4)
    inputs; bf16 itself resolves 0.0039 relative), and its kernel is 2.2x faster forward and
    1.8x backward on AMX cores, where the tanh kernel was a third of a bf16 embedding
    (benchmarks/RESULTS.md). fp32 (and so the reference parity) keeps the tanh form.
    """
    if x.dtype == torch.bfloat16 and x.device.type == "cpu":
        return _gelu_erf(x)
    return F.gelu(x, approximate="tanh")


@torch.library.custom_op("astropt::gelu_erf", mutates_args=())
def _gelu_erf(x: torch.Tensor) -> torch.Tensor:
    """torch's exact GELU kernel, as an op of its own: ``torch.compile`` calls it instead of
    generating its own, which ran 2.2x slower forward and 1.6x backward (bf16, AMX cores;
    benchmarks/RESULTS.md)."""
    return F.gelu(x)


@_gelu_erf.register_fake
def _(x):
    return torch.empty_like(x)


@torch.library.custom_op("astropt::gelu_erf_backward", mutates_args=())
def _gelu_erf_backward(grad: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """torch's exact GELU backward kernel (an op of its own for the same reason)."""
    return torch.ops.aten.gelu_backward(grad, x)


@_gelu_erf_backward.register_fake
def _(grad, x):
    return torch.empty_like(x)


def _gelu_setup(ctx, inputs, output) -> None:
    ctx.save_for_backward(inputs[0])


def _gelu_backward(ctx, grad):
    (x,) = ctx.saved_tensors
    return _gelu_erf_backward(grad, x)


_gelu_erf.register_autograd(_gelu_backward, setup_context=_gelu_setup)


class TokenMLP(nn.Module):
    """Maps token vectors between data space and the residual stream.

    ``aim``: Linear -> GELU(tanh) -> Linear with a hidden width of ``4 * hidden_width``;
    ``affine``: a single Linear; ``relu``: the v1 reference's ReLU MLPs, always with biases
    (``role`` ``encoder``: in -> C -> C, a ReLU after each; ``decoder``: C -> 2C -> C -> out
    with ReLUs between), kept as ``net`` (an ``nn.Sequential``) so that the reference's
    parameter indices map one to one.
    """

    def __init__(self, in_size: int, out_size: int, hidden_width: int, kind: str, bias: bool,
                 role: str = "encoder"):
        super().__init__()
        self.kind = kind
        if kind == "affine":
            self.c_fc = nn.Linear(in_size, out_size, bias=bias)
        elif kind == "aim":
            self.c_fc = nn.Linear(in_size, 4 * hidden_width, bias=bias)
            self.c_proj = nn.Linear(4 * hidden_width, out_size, bias=bias)
        elif kind == "relu":
            c = hidden_width
            if role == "encoder":
                layers = [nn.Linear(in_size, c), nn.ReLU(), nn.Linear(c, out_size), nn.ReLU()]
            else:
                layers = [nn.Linear(in_size, 2 * c), nn.ReLU(), nn.Linear(2 * c, c), nn.ReLU(),
                          nn.Linear(c, out_size)]
            self.net = nn.Sequential(*layers)
        else:
            raise ValueError(f"unknown tokeniser {kind!r}; use 'aim', 'affine' or 'relu'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "relu":
            return self.net(x)
        x = self.c_fc(x)
        if self.kind == "aim":
            x = self.c_proj(gelu_tanh(x))
        return x


@dataclass
class KVCache:
    """Keys and values of one attention layer, preallocated to ``max_len`` positions."""

    k: torch.Tensor  # (B, n_head, max_len, head_dim)
    v: torch.Tensor
    length: int = 0

    @classmethod
    def empty(cls, batch: int, n_head: int, max_len: int, head_dim: int, like: torch.Tensor):
        shape = (batch, n_head, max_len, head_dim)
        return cls(like.new_zeros(shape), like.new_zeros(shape), 0)

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        t = k.shape[2]
        end = self.length + t
        if end > self.k.shape[2]:
            raise ValueError(f"KV cache overflow: {end} positions > capacity {self.k.shape[2]}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class SelfAttention(nn.Module):
    """Multi-head self-attention with a fused QKV projection, through torch SDPA."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, causal: bool):
        super().__init__()
        self.c_attn = nn.Linear(n_embd, 3 * n_embd, bias=bias)
        self.c_proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)
        self.n_head = n_head
        self.dropout = dropout
        self.causal = causal
        self.attention_kernel = "sdpa"
        """``sdpa`` or ``recompute`` (:mod:`astropt.model.attention`; set by training)."""

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        """Args:
        x: ``(B, T, C)`` inputs (new positions only, when ``cache`` is given).
        key_mask: ``(B, S)`` bool, True where a key position is a real token (S = keys seen).
        cache: keys/values of earlier positions; the new ones are appended to it.
        causal: this call's mask, overriding the module's (``False``: full attention, for
            the masked branch of the ``ar_mae`` objective); None: the module's own.
        """
        causal = self.causal if causal is None else causal
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        # (B, T, C) -> (B, n_head, T, head_dim)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        offset = 0
        if cache is not None:
            offset = cache.length
            k, v = cache.append(k, v)
        s = k.shape[2]

        attn_mask = None
        is_causal = False
        if key_mask is not None or (causal and offset > 0 and t > 1):
            attn_mask = torch.ones(t, s, dtype=torch.bool, device=x.device)
            if causal:
                attn_mask = torch.tril(attn_mask, diagonal=offset)
            if key_mask is not None:
                attn_mask = attn_mask & key_mask[:, None, None, :s]  # (B, 1, T, S)
                # Every query also sees its own key: a padding query whose earlier keys are
                # all padding would otherwise get an all-masked row, i.e. NaN, which would
                # then leak into real tokens through 0 * NaN. Real queries are unaffected.
                rows = torch.arange(offset, offset + t, device=x.device)
                attn_mask = attn_mask | (rows[:, None] == torch.arange(s, device=x.device))
        elif causal and t > 1:
            is_causal = True
        dropout = self.dropout if self.training else 0.0
        y = attention(q, k, v, attn_mask, dropout, is_causal, self.attention_kernel)
        y = y.transpose(1, 2).reshape(b, t, c)  # (B, n_head, T, hd) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, n_embd: int, dropout: float, bias: bool):
        super().__init__()
        self.c_fc = nn.Linear(n_embd, 4 * n_embd, bias=bias)
        self.c_proj = nn.Linear(4 * n_embd, n_embd, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(gelu_tanh(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool, causal: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, causal)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = MLP(n_embd, dropout, bias)

    def forward(
        self,
        x: torch.Tensor,
        key_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        causal: bool | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), key_mask=key_mask, cache=cache, causal=causal)
        return x + self.mlp(self.ln_2(x))
