"""QLoRA (4-bit NF4 LLM + LoRA adapters): skipped with a message where bitsandbytes or a CUDA
GPU is missing, and (``gpu``-marked) loading in 4 bits and training where both exist."""

from __future__ import annotations

import importlib.util
import logging

import pytest
import torch

from astropt.config import LLMConfig, ModalityConfig, ModelConfig
from astropt.model.astropt import AstroPT

HAS_QLORA = torch.cuda.is_available() and importlib.util.find_spec("bitsandbytes") is not None


def qlora_config(model_name: str = "", lora_r: int = 4, qlora: bool = True) -> ModelConfig:
    image = ModalityConfig(name="images", image_size=16, n_channels=1, patch_size=4)
    return ModelConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, backbone="llm", modality_tokens=True,
                       tokeniser="affine", modalities=[image],
                       llm=LLMConfig(model_name=model_name, intermediate_size=64, lora_r=lora_r, qlora=qlora))


@pytest.fixture(scope="module")
def pretrained_llm(tmp_path_factory) -> str:
    """A tiny causal LM saved as a pretrained folder (what a hub id resolves to), offline."""
    folder = tmp_path_factory.mktemp("lm")
    torch.manual_seed(0)
    llm = AstroPT(qlora_config(lora_r=0, qlora=False)).llm
    llm.base().save_pretrained(folder)
    llm.tokenizer.save_pretrained(folder)
    return str(folder)


def images(device="cpu") -> dict[str, torch.Tensor]:
    return {"images": torch.randn(2, 16, 16, generator=torch.Generator().manual_seed(0)).to(device)}


@pytest.mark.skipif(HAS_QLORA, reason="bitsandbytes and a GPU are present: the gpu test loads in 4 bits")
def test_without_bitsandbytes_or_a_gpu_qlora_is_skipped_with_a_message(pretrained_llm, caplog):
    with caplog.at_level(logging.WARNING, logger="astropt.model.backbones"):
        model = AstroPT(qlora_config(pretrained_llm))
    assert "model.llm.qlora: 4-bit loading skipped because" in caplog.text
    assert not getattr(model.llm.base(), "is_loaded_in_4bit", False)
    trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)  # LoRA still applies
    model.loss(images()).backward()


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_QLORA, reason="QLoRA needs a CUDA GPU and bitsandbytes")
def test_qlora_loads_the_llm_in_4_bits_and_trains_the_adapters(pretrained_llm):
    model = AstroPT(qlora_config(pretrained_llm)).to("cuda")
    assert model.llm.base().is_loaded_in_4bit
    trainable = [n for n, p in model.llm.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(10):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model.loss(images("cuda"))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
