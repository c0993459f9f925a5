"""The blocks' GELU: the tanh form in fp32, torch's fast exact form in bf16 on a CPU."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def test_bf16_gelu_on_cpu_is_within_bf16_rounding_of_the_tanh_form():
    """In bf16 on a CPU the blocks' GELU is computed in its exact (erf) form, torch's fast
    bf16 kernel: against the exact tanh-approximation GELU (fp64) its error is that of
    torch's own bf16 tanh kernel, to within 10%. fp32 keeps the tanh form bit for bit."""
    from astropt.model.transformer import gelu_tanh

    x = torch.randn(4096, 256, generator=torch.Generator().manual_seed(0)) * 2
    truth = F.gelu(x.double(), approximate="tanh")
    ours = (gelu_tanh(x.bfloat16()).double() - truth).abs()
    torch_tanh = (F.gelu(x.bfloat16(), approximate="tanh").double() - truth).abs()
    assert ours.mean() <= 1.1 * torch_tanh.mean() and ours.max() <= 1.1 * torch_tanh.max()
    assert torch.equal(gelu_tanh(x), F.gelu(x, approximate="tanh"))
    assert not torch.equal(gelu_tanh(x.bfloat16()), F.gelu(x.bfloat16(), approximate="tanh"))


def test_bf16_gelu_is_torchs_kernel_in_eager_and_under_compile():
    """The bf16 GELU is an op of its own, so that torch.compile calls torch's kernel rather
    than generating a slower one: compiled, its values and gradients are the eager ones bit
    for bit, and those are F.gelu's and its backward's."""
    from astropt.model.transformer import gelu_tanh

    x = (torch.randn(8, 64, 96, generator=torch.Generator().manual_seed(1)) * 2).bfloat16()
    grad = torch.randn(8, 64, 96, generator=torch.Generator().manual_seed(2)).bfloat16()

    def run(fn):
        leaf = x.clone().requires_grad_()
        out = fn(leaf)
        out.backward(grad)
        return out.detach(), leaf.grad

    eager, compiled, plain = run(gelu_tanh), run(torch.compile(gelu_tanh, fullgraph=True)), run(F.gelu)
    for a, b in zip(eager, compiled, strict=True):
        assert torch.equal(a, b)
    for a, b in zip(eager, plain, strict=True):
        assert torch.equal(a, b)
