"""Scaled dot-product attention of the model's blocks: torch SDPA, or (training in bf16 on a
CPU) SDPA's fused flash forward with a backward of our own.

torch's CPU flash-attention backward runs far below the matrix units' speed (about 6% of the
bf16 peak on AMX cores, a quarter of a training step of the 24M model: benchmarks/RESULTS.md).
The ``recompute`` kernel keeps the fused forward, which saves the log-sum-exp of each query
row, and computes the gradients as FlashAttention does, but with whole bf16 matrix products
over cache-sized chunks of the batch: ``P = exp(Q K^T s - lse)``, ``dV = P^T dO``,
``dP = dO V^T``, ``dS = P (dP - rowsum(dO O))``, ``dQ = dS K s``, ``dK = dS^T Q s``. The
element-wise steps are fused by inductor (``torch.compile``, one compiled graph per chunk
shape). Gradients equal SDPA's to bf16 rounding (tests/model/test_attention.py).

It is used only where it applies: a CPU tensor that needs gradients, no mask other than
causal, no dropout, keys as long as the queries, and one object's probabilities within a
chunk (up to 724 tokens at 8 heads; longer sequences run SDPA's tiled backward, measured
faster there). Everything else (inference, the KV cache,
padding masks) runs SDPA. Both halves are custom ops, so ``torch.compile`` of the whole model
keeps them whole (it compiles the rest around them).
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

CHUNK_BYTES = 8 << 20
"""Largest probability block ``P`` (bf16) one chunk of the backward holds: 8 objects of 256
tokens at 8 heads. Measured on AMX cores, 16 objects of 256 tokens: 8 MiB chunks 9.7-13.6
ms, 4 MiB 10.3-10.4, 1-2 MiB 11.2-18.2, 16 MiB 16.7-17.6."""
MAX_SHAPES = 8
"""Distinct chunk shapes compiled; further shapes use SDPA's own backward (no recompiles)."""
PROFILE_RANGE = "astropt::attention_backward"
"""The profiler range around the ``recompute`` backward (benchmarks/profile_step.py)."""


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None,
              dropout_p: float, is_causal: bool, kernel: str = "sdpa") -> torch.Tensor:
    """``softmax(Q K^T / sqrt(d)) V`` of ``(B, H, T, d)`` tensors by ``kernel`` (where it
    applies, see the module docstring; SDPA otherwise)."""
    if kernel == "recompute" and _applies(q, k, attn_mask, dropout_p):
        return _forward_op(q, k, v, is_causal)[0]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal)


def _applies(q: torch.Tensor, k: torch.Tensor, attn_mask: torch.Tensor | None, dropout_p: float) -> bool:
    # One object's probabilities must fit a chunk: at 1024 tokens (8 heads, 16 MiB) SDPA's
    # tiled backward was measured as fast or faster (4,200 against 3,450-4,080 tok/s,
    # astropt-20m; 19.2 against 19.1-27.3 ms for the backward of 2 objects).
    small = q.shape[1] * q.shape[2] * k.shape[2] * q.element_size() <= CHUNK_BYTES
    return (q.device.type == "cpu" and attn_mask is None and dropout_p == 0.0 and torch.is_grad_enabled()
            and q.requires_grad and q.shape[-2] == k.shape[-2] and small)


def set_attention_kernel(module: torch.nn.Module, kernel: str) -> None:
    """Make every attention layer of ``module`` run ``kernel`` (``sdpa`` or ``recompute``)."""
    if kernel not in ("sdpa", "recompute"):
        raise ValueError(f"attention kernel {kernel!r}: resolve 'auto' first (resolve_attention_kernel)")
    for layer in module.modules():
        if hasattr(layer, "attention_kernel"):
            layer.attention_kernel = kernel


def resolve_attention_kernel(kernel: str, dtype: torch.dtype, device: torch.device, compiled: bool = False) -> str:
    """``auto``: ``recompute`` for bf16 training on a CPU (measured faster than SDPA's
    forward and backward, with and without ``torch.compile`` of the model:
    benchmarks/RESULTS.md) unless no C++ compiler for inductor is found (said in the log);
    ``sdpa`` otherwise. fp32 stays on SDPA, whose fp32 backward is as fast. ``compiled``
    (the model under ``torch.compile``) does not change the choice; it is kept for the log."""
    if kernel != "auto":
        return kernel
    if device.type != "cpu" or dtype != torch.bfloat16:
        return "sdpa"
    if not have_compiler():
        log.warning("no C++ compiler for torch.compile%s: attention trains with SDPA's slower CPU backward "
                    "(install g++ for the faster one; train.attention: sdpa silences this)",
                    " (needed by train.compile too)" if compiled else "")
        return "sdpa"
    return "recompute"


@functools.cache
def have_compiler() -> bool:
    import shutil

    from torch._inductor import cpp_builder

    try:
        return shutil.which(cpp_builder.get_cpp_compiler()) is not None
    except (RuntimeError, OSError):
        return False


@torch.library.custom_op("astropt::attention_recompute", mutates_args=())
def _forward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA's CPU flash forward: the output and the log-sum-exp of each query row. An op of
    its own, so that ``torch.compile`` of the model keeps it (and its backward) whole."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, is_causal)
    return out.contiguous(), lse.contiguous()


@_forward_op.register_fake
def _(q, k, v, is_causal):
    return q.new_empty(q.shape), q.new_empty(q.shape[:-1], dtype=torch.float32)


@torch.library.custom_op("astropt::attention_recompute_backward", mutates_args=())
def _backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, lse: torch.Tensor,
                 grad: torch.Tensor, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The gradients of the module docstring (compiled chunk by chunk)."""
    with torch.profiler.record_function(PROFILE_RANGE):
        return tuple(g.contiguous() for g in _backward(q, k, v, out, lse, grad.contiguous(), is_causal))


@_backward_op.register_fake
def _(q, k, v, out, lse, grad, is_causal):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, is_causal = inputs
    ctx.save_for_backward(q, k, v, *output)
    ctx.is_causal = is_causal


def _backward_formula(ctx, grad_out, grad_lse):
    q, k, v, out, lse = ctx.saved_tensors
    return (*_backward_op(q, k, v, out, lse, grad_out, ctx.is_causal), None)


_forward_op.register_autograd(_backward_formula, setup_context=_setup_context)


def _backward(q, k, v, out, lse, grad, is_causal: bool) -> tuple[torch.Tensor, ...]:
    b, h, t, _ = q.shape
    step = max(1, CHUNK_BYTES // (h * t * t * q.element_size()))
    bias = _causal_bias(t, q.device) if is_causal else None
    chunks = []
    for start in range(0, b, step):
        part = [x[start : start + step] for x in (q, k, v, out, lse, grad)]
        kernel = _compiled(tuple(part[0].shape), part[0].dtype, is_causal)
        if kernel is None:  # too many shapes: SDPA's own backward, no recompile
            chunks.append(torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
                part[5], *part[:5], 0.0, is_causal))
        else:
            chunks.append(kernel(*part, bias))
    if len(chunks) == 1:
        return chunks[0]
    return tuple(torch.cat(g) for g in zip(*chunks, strict=True))


_SHAPES: set[tuple] = set()


def _compiled(shape: tuple[int, ...], dtype: torch.dtype, is_causal: bool):
    """The compiled backward for chunks of ``shape`` (None past :data:`MAX_SHAPES`)."""
    key = (shape, dtype, is_causal)
    if key not in _SHAPES:
        if len(_SHAPES) >= MAX_SHAPES:
            return None
        _SHAPES.add(key)
    return _compiled_core()


@functools.cache
def _compiled_core():
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, MAX_SHAPES + 2)
    return torch.compile(_core, dynamic=False)


@functools.cache
def _causal_bias(t: int, device: torch.device) -> torch.Tensor:
    """``(t, t)`` fp32: 0 where a query sees a key, -inf above the diagonal. Added to the
    scores it zeroes the masked probabilities: 1.12-1.16x faster than a mask computed from
    the indices in the compiled kernel (same gradients, bit for bit)."""
    return torch.zeros(t, t, device=device).masked_fill(torch.ones(t, t, dtype=torch.bool, device=device).triu(1),
                                                        float("-inf"))


def _core(q, k, v, out, lse, grad, bias: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # P is kept in bf16 (the precision dV's product takes anyway): against an fp32 P, one
    # read of 2 bytes instead of a write and two reads of 4 per element, measured 1.1-1.2x
    # faster for the same distance to SDPA's gradients (tests/model/test_attention.py).
    scale = q.shape[-1] ** -0.5
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale
    if bias is not None:
        scores = scores + bias
    p = torch.exp(scores - lse.unsqueeze(-1)).to(q.dtype)
    grad_v = torch.matmul(p.transpose(-1, -2), grad)
    grad_p = torch.matmul(grad, v.transpose(-1, -2)).float()
    delta = (grad.float() * out.float()).sum(-1, keepdim=True)
    grad_s = (p.float() * (grad_p - delta) * scale).to(q.dtype)
    return torch.matmul(grad_s, k), torch.matmul(grad_s.transpose(-1, -2), q), grad_v
