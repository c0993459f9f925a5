"""The ``recompute`` attention kernel: SDPA's gradients to bf16 rounding (causal and full,
chunked or not, past the compiled shapes), SDPA wherever it does not apply, the ``auto``
rule, and a bf16 training run that follows SDPA's."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from astropt.config import RunConfig, TrainConfig
from astropt.model import attention as attn
from astropt.model.transformer import SelfAttention
from astropt.runtime import DistInfo
from astropt.train import loop


def _qkv(b=3, h=2, t=24, d=16, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, h, t, d, generator=g).to(dtype).requires_grad_() for _ in range(4)]


def _grads(fn, q, k, v, grad):
    for x in (q, k, v):
        x.grad = None
    fn(q, k, v).backward(grad)
    return [x.grad.float().clone() for x in (q, k, v)]


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("chunk_bytes", [attn.CHUNK_BYTES, 2 * 2 * 24 * 24 * 2])  # whole batch; 2 + 1 objects
def test_recompute_matches_sdpa_to_bf16_rounding(causal, chunk_bytes, monkeypatch):
    monkeypatch.setattr(attn, "CHUNK_BYTES", chunk_bytes)
    q, k, v, grad = _qkv()
    exact = [x.detach().float().requires_grad_() for x in (q, k, v)]
    truth = _grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=causal), *exact, grad.float())
    sdpa = _grads(lambda a, b, c: attn.attention(a, b, c, None, 0.0, causal, "sdpa"), q, k, v, grad)
    ours = _grads(lambda a, b, c: attn.attention(a, b, c, None, 0.0, causal, "recompute"), q, k, v, grad)
    for mine, theirs, true in zip(ours, sdpa, truth, strict=True):
        assert _rel(mine, true) < max(2 * _rel(theirs, true), 1e-2)  # as close to fp32 as SDPA's
    out = attn.attention(q, k, v, None, 0.0, causal, "recompute")
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal))


def test_past_the_compiled_shapes_sdpas_backward_is_used(monkeypatch):
    monkeypatch.setattr(attn, "_SHAPES", {(("full",), None, None)})
    monkeypatch.setattr(attn, "MAX_SHAPES", 1)
    q, k, v, grad = _qkv(t=8)
    sdpa = _grads(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True), q, k, v, grad)
    ours = _grads(lambda a, b, c: attn.attention(a, b, c, None, 0.0, True, "recompute"), q, k, v, grad)
    for mine, theirs in zip(ours, sdpa, strict=True):
        torch.testing.assert_close(mine, theirs)  # the very same kernel


def test_sdpa_runs_wherever_recompute_does_not_apply(monkeypatch):
    calls = []
    monkeypatch.setattr(attn, "_forward_op", lambda *a: calls.append(a) or (a[0], None))
    q, k, v, _ = _qkv(t=8)
    mask = torch.ones(8, 8, dtype=torch.bool).tril()
    attn.attention(q, k, v, mask, 0.0, False, "recompute")  # a mask
    attn.attention(q, k, v, None, 0.1, True, "recompute")  # dropout
    attn.attention(q, k[:, :, :4], v[:, :, :4], None, 0.0, False, "recompute")  # a KV cache's keys
    monkeypatch.setattr(attn, "CHUNK_BYTES", 2 * 8 * 8 * 2 - 1)
    attn.attention(q, k, v, None, 0.0, True, "recompute")  # one object's probabilities exceed a chunk
    monkeypatch.setattr(attn, "CHUNK_BYTES", 2 * 8 * 8 * 2)
    with torch.no_grad():
        attn.attention(q, k, v, None, 0.0, True, "recompute")  # inference
    assert calls == []
    attn.attention(q, k, v, None, 0.0, True, "recompute")
    assert len(calls) == 1


def test_recompute_inside_a_compiled_model_keeps_its_gradients():
    """Under torch.compile the two custom ops stay whole: the gradients are the eager ones."""
    q, k, v, grad = _qkv(b=2, t=16)
    eager = _grads(lambda a, b, c: attn.attention(a, b, c, None, 0.0, True, "recompute"), q, k, v, grad)
    fn = torch.compile(lambda a, b, c: attn.attention(a, b, c, None, 0.0, True, "recompute") * 2.0, fullgraph=True)
    compiled = _grads(fn, q, k, v, grad)
    for a, b in zip(compiled, eager, strict=True):
        torch.testing.assert_close(a, 2.0 * b)


def test_auto_rule_and_the_layers_it_sets(monkeypatch):
    monkeypatch.setattr(attn, "have_compiler", lambda: True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert attn.resolve_attention_kernel("auto", torch.bfloat16, cpu, compiled=False) == "recompute"
    assert attn.resolve_attention_kernel("auto", torch.float32, cpu, compiled=False) == "sdpa"
    assert attn.resolve_attention_kernel("auto", torch.bfloat16, cpu, compiled=True) == "recompute"
    assert attn.resolve_attention_kernel("auto", torch.bfloat16, cuda, compiled=False) == "sdpa"
    assert attn.resolve_attention_kernel("recompute", torch.float32, cpu, compiled=False) == "recompute"
    monkeypatch.setattr(attn, "have_compiler", lambda: False)
    assert attn.resolve_attention_kernel("auto", torch.bfloat16, cpu, compiled=False) == "sdpa"
    layers = torch.nn.Sequential(SelfAttention(16, 2, 0.0, False, True), SelfAttention(16, 2, 0.0, False, True))
    attn.set_attention_kernel(layers, "recompute")
    assert [m.attention_kernel for m in layers] == ["recompute", "recompute"]
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        attn.set_attention_kernel(layers, "auto")


def _losses(kernel: str, steps: int = 6) -> list[float]:
    cfg = RunConfig(train=TrainConfig(dtype="bfloat16", attention=kernel, lr=3e-3, warmup_steps=1, max_steps=steps))
    cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd = 2, 2, 32
    engine = loop.build_engine(cfg, DistInfo(device=torch.device("cpu")))
    assert engine.attention == kernel and engine.precision == "cast_once"
    g = torch.Generator().manual_seed(0)
    m = cfg.model.modalities[0]
    n = (m.image_size // m.patch_size) ** 2
    batch = {"images": torch.randn(4, n, m.input_size, generator=g),
             "images_positions": torch.arange(n).expand(4, n)}
    c = loop.step_components(cfg, DistInfo(device=torch.device("cpu")), engine)
    batches = iter(lambda: (batch, ["a", "b", "c", "d"]), None)
    losses = [loop.train_step(c, batches, step) for step in range(steps)]
    return losses


def test_bf16_training_with_recompute_follows_sdpa():
    sdpa, ours = _losses("sdpa"), _losses("recompute")
    assert ours[-1] < ours[0]
    for a, b in zip(ours, sdpa, strict=True):
        assert abs(a - b) <= 0.02 * abs(b)

