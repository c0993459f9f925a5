"""Parity with the real reference packages, per checkpoint generation (fixtures written by
astropt 1.0.2 and 2.0.9 themselves: see fixtures/reference/README.md).

For each generation: our tokens of the reference's images, the default embedding with no
extra arguments, next-token predictions, and an HF-dataset image (``(H, W, 3)`` uint8) fed
as the reference's training pipeline fed it, all equal to < 1e-5 in fp32.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from hubfake import make_cache

from astropt import AstroPT, convert_reference_checkpoint
from astropt.modalities import build_modality

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reference"
CASES = {
    "v1": ("ckpt_v1_tiny_l3.pt", "expected_v1_l3.npz"),
    "v2": ("ckpt_v2_tiny.pt", "expected_v2.npz"),
    "v2-lora": ("ckpt_v2_lora_tiny.pt", "expected_v2_lora.npz"),
}
ATOL = 1e-5


def check_outputs(model: AstroPT, expected) -> None:
    images = model.config.modality("images")
    tokens = build_modality(images).tokenize(torch.from_numpy(expected["images"]))
    np.testing.assert_allclose(tokens.values.numpy(), expected["tokens"], atol=ATOL, rtol=0)
    batch = {"images": torch.from_numpy(expected["tokens"]), "images_positions": tokens.positions}
    np.testing.assert_allclose(model.embed(batch)["images"].numpy(), expected["embeddings"], atol=ATOL, rtol=0)
    tokens_out = model.embed(batch, pool="none")["images"].numpy()
    np.testing.assert_allclose(tokens_out, expected["embeddings_tokens"], atol=ATOL, rtol=0)
    with torch.no_grad():
        pred = model.predict_all(batch)["images"].numpy()
    np.testing.assert_allclose(pred, expected["predictions"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("generation", sorted(CASES))
def test_reference_numbers_per_generation(generation, tmp_path):
    ckpt, npz = CASES[generation]
    expected = np.load(FIXTURES / npz)
    model = AstroPT.from_pretrained(FIXTURES / ckpt)
    check_outputs(model, expected)
    # converted to a pretrained folder and loaded again: the same numbers
    check_outputs(AstroPT.from_pretrained(convert_reference_checkpoint(FIXTURES / ckpt, tmp_path / "m")), expected)


def test_generation_conventions():
    v1 = AstroPT.from_pretrained(FIXTURES / CASES["v1"][0])
    v2 = AstroPT.from_pretrained(FIXTURES / CASES["v2"][0])
    # v1: the last block's output; v2: the middle block's (both mean-pooled, no ln_f)
    assert v1.config.n_layer == 3 and v1.config.default_embed_layer == 2
    assert v2.config.default_embed_layer == v2.config.n_layer // 2
    assert v1.config.tokeniser == "relu" and v2.config.tokeniser == "aim"
    assert v1.pretrained_extra["reference"]["generation"] == "v1"
    assert v2.pretrained_extra["reference"]["generation"] == "v2"


@pytest.mark.parametrize("generation, repo, subfolder", [
    ("v1", "Smith42/astroPT", "models/fully_trained/0001M_params"),
    ("v2", "Smith42/astroPT_v2.0", "astropt/095M"),
])
def test_published_model_embeds_hf_images_as_the_reference(generation, repo, subfolder, tmp_path, monkeypatch):
    """A published model from the hub (cache) given an HF-dataset image gets the reference's
    training-pipeline tokens and embedding, with no flags: the conventions travel."""
    from huggingface_hub import constants

    ckpt, npz = CASES[generation]
    expected = np.load(FIXTURES / npz)
    name = f"{subfolder}/030000_ckpt.pt" if generation == "v1" else f"{subfolder}/ckpt.pt"
    make_cache(tmp_path / "hub", repo, {name: FIXTURES / ckpt})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    model = AstroPT.from_pretrained(f"{repo}/{name}")
    assert model.pretrained_extra["preprocessing"]["dataset"] == "Smith42/galaxies"
    # what an HF image source yields: np.array(PIL image) (H, W, 3) -> (C, H, W) float
    chw = torch.from_numpy(np.ascontiguousarray(expected["jpeg_like"].transpose(2, 0, 1)).astype(np.float32))
    tokens = build_modality(model.config.modality("images")).tokenize(chw)
    np.testing.assert_allclose(tokens.values.numpy(), expected["jpeg_like_input_f32"], atol=ATOL, rtol=0)
    batch = {"images": tokens.values[None], "images_positions": tokens.positions[None]}
    np.testing.assert_allclose(model.embed(batch)["images"][0].numpy(), expected["jpeg_like_embedding"],
                               atol=ATOL, rtol=0)
