"""bf16 weights cast once per step (ComputeCopy) and the rules that choose a precision."""

from __future__ import annotations

import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.model import AstroPT
from astropt.runtime import BF16_CPU_MIN_WIDTH, DistInfo, resolve_dtype
from astropt.train.precision import ComputeCopy, resolve_mixed_precision


def _model() -> AstroPT:
    torch.manual_seed(0)
    image = ModalityConfig(name="images", image_size=16, patch_size=4, n_channels=2)
    return AstroPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, modalities=[image]))


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(3, 16, 32, generator=g), "images_positions": torch.arange(16).expand(3, -1)}


def test_compute_copy_accumulates_fp32_gradients_close_to_fp32_training():
    model = _model()
    copy = ComputeCopy(model, torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in copy.module.parameters())
    copy.pull()
    for seed in (1, 2):  # two micro-batches: their gradients add up in the master fp32 grads
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = copy.module.loss(_batch(seed))
        loss.backward()
        copy.push_grads()
    assert all(p.grad is None for p in copy.module.parameters())  # cleared after the push
    reference = _model()
    for seed in (1, 2):
        reference.loss(_batch(seed)).backward()
    for (name, p), q in zip(model.named_parameters(), reference.parameters(), strict=True):
        assert p.grad.dtype == torch.float32, name
        rel = (p.grad - q.grad).norm() / q.grad.norm().clamp(min=1e-12)
        assert rel < 0.05, f"{name}: relative gradient error {rel:.3f}"


def test_pull_brings_the_updated_master_weights():
    model = _model()
    copy = ComputeCopy(model, torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    copy.pull()
    for p, c in zip(model.parameters(), copy.module.parameters(), strict=True):
        torch.testing.assert_close(c.float(), p, atol=0.07, rtol=1e-2)  # bf16 rounding of p


def test_mixed_precision_rules():
    cpu, cuda = DistInfo(device=torch.device("cpu")), DistInfo(device=torch.device("cuda", 0))
    ddp = DistInfo(world_size=2, device=torch.device("cpu"))
    bf16 = torch.bfloat16
    assert resolve_mixed_precision("auto", torch.float32, cpu, fsdp=False) == "none"
    assert resolve_mixed_precision("auto", bf16, cpu, fsdp=False) == "cast_once"
    assert resolve_mixed_precision("auto", bf16, cuda, fsdp=False) == "autocast"
    assert resolve_mixed_precision("auto", bf16, ddp, fsdp=False) == "autocast"
    assert resolve_mixed_precision("cast_once", bf16, ddp, fsdp=False) == "autocast"  # DDP hooks: master weights
    assert resolve_mixed_precision("auto", bf16, ddp, fsdp=True) == "fsdp"
    assert resolve_mixed_precision("autocast", bf16, cpu, fsdp=False) == "autocast"


def test_auto_dtype_keeps_narrow_models_in_fp32_on_a_bf16_cpu(monkeypatch):
    import astropt.runtime as runtime

    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: True)
    assert resolve_dtype("auto", "cpu", BF16_CPU_MIN_WIDTH - 1) == torch.float32
    assert resolve_dtype("auto", "cpu", BF16_CPU_MIN_WIDTH) == torch.bfloat16
    assert resolve_dtype("auto", "cpu") == torch.bfloat16  # width unknown
    assert resolve_dtype("bfloat16", "cpu", 8) == torch.bfloat16  # asked for by name
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: False)
    assert resolve_dtype("auto", "cpu", 4096) == torch.float32
