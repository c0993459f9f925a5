"""The ``codec: aion`` adapter: records -> AION codebook indices for a discrete modality.

Offline, the adapter's contract is tested with a local fake codec (``FakeAIONImageCodec``)
and, where ``polymathic-aion`` is installed, end to end with AION codecs built from their
constructors with random weights (the pretrained ones come from the hub). The errors for a
missing package and for weights that are neither cached nor downloadable are checked too.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from astropt.config import ConfigError, ModalityConfig, ModelConfig
from astropt.errors import CodecUnavailableError, CodecWeightsError, TokenizationError
from astropt.modalities import build_modality
from astropt.modalities.aion_codec import AIONCodec, load_codec
from astropt.modalities.discrete import DiscreteModality
from astropt.model.astropt import AstroPT

BANDS = ["DES-G", "DES-R", "DES-I", "DES-Z"]


def aion_config(codec_name: str = "image", vocab_size: int = 16, max_tokens: int = 16, **kw) -> ModalityConfig:
    return ModalityConfig(name="codes", kind="discrete", field="image", codec="aion", codec_name=codec_name,
                          vocab_size=vocab_size, max_tokens=max_tokens, bands=kw.pop("bands", BANDS), **kw)


@dataclass
class FakeImage:
    flux: torch.Tensor
    bands: list[str]


class FakeAIONImageCodec:
    """Stands in for an AION image codec: the same interface, a trivial code (the 4x4-block
    mean of the first band, in 16 levels)."""

    modality = FakeImage

    class quantizer:  # noqa: N801  (AION's attribute name)
        codebook_size = 16

    def encode(self, x: FakeImage) -> torch.Tensor:
        blocks = x.flux[:, 0].unfold(1, 4, 4).unfold(2, 4, 4).mean((-1, -2))  # (B, H/4, W/4)
        return (blocks.clamp(0, 0.999) * 16).floor().to(torch.int32).flatten(1)


def images(b: int = 3, size: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((b, 4, size, size)).astype(np.float32)


def test_the_adapter_turns_records_into_the_codecs_indices():
    config = aion_config()
    fake = FakeAIONImageCodec()
    modality = DiscreteModality(config, codec=AIONCodec(config, codec=fake))
    x = images()
    records = [{"id": f"g{i}", "image": x[i]} for i in range(3)]
    tokens = modality.tokenize_records(records)
    expected = fake.encode(FakeImage(torch.from_numpy(x), BANDS)).long()
    assert tokens.values.dtype == torch.int64 and torch.equal(tokens.values, expected)
    assert tokens.mask is None and torch.equal(modality.tokenize(x[1]).values, expected[1])


def test_codebook_size_and_bands_are_checked():
    with pytest.raises(TokenizationError, match="has 16 codes but vocab_size is 32; set vocab_size: 16"):
        AIONCodec(aion_config(vocab_size=32), codec=FakeAIONImageCodec())
    with pytest.raises(TokenizationError, match="AION band name of each channel"):
        AIONCodec(aion_config(bands=[]), codec=FakeAIONImageCodec())
    with pytest.raises(ConfigError, match="not an AION image or spectrum codec"):
        AIONCodec(aion_config(codec_name="radio"), codec=FakeAIONImageCodec())
    config = aion_config()
    with pytest.raises(TokenizationError, match="needs \\(C, H, W\\) images with C = 4 bands"):
        AIONCodec(config, codec=FakeAIONImageCodec()).encode_records([{"id": "g0", "image": images()[0, :2]}])


def test_a_missing_package_names_the_extra(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "aion" else real(name, *a))
    with pytest.raises(CodecUnavailableError, match=r"pip install 'astropt\[aion\]'") as info:
        build_modality(aion_config())
    assert isinstance(info.value, ImportError)


def test_weights_neither_cached_nor_downloadable_are_a_clear_error(monkeypatch, tmp_path):
    pytest.importorskip("aion.codecs")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(CodecWeightsError, match="codec weights are not in the Hugging Face cache .* HF_HOME"):
        load_codec(aion_config())


def test_random_weight_aion_codecs_tokenise_images_and_spectra_for_training():
    codecs = pytest.importorskip("aion.codecs")
    torch.manual_seed(0)
    image_codec = codecs.ImageCodec(quantizer_levels=[4, 4], hidden_dims=16, multisurvey_projection_dims=8,
                                    n_compressions=2, num_consecutive=1, embedding_dim=2).eval()
    image_cfg = aion_config(max_tokens=576)
    image_mod = DiscreteModality(image_cfg, codec=AIONCodec(image_cfg, codec=image_codec))
    x = images(2, 96)
    tokens = image_mod.tokenize_records([{"id": f"g{i}", "image": x[i]} for i in range(2)])
    with torch.no_grad():
        direct = image_codec.encode(image_codec.modality(flux=torch.from_numpy(x), bands=BANDS))
    assert tokens.values.shape == (2, 576) and torch.equal(tokens.values, direct.long())

    spec_codec = codecs.SpectrumCodec(encoder_depths=(1, 1), encoder_dims=(8, 16), decoder_depths=(1, 1),
                                      decoder_dims=(16, 1), num_pixels=512, latent_channels=16, codebook_size=32,
                                      embedding_dim=4, dim=4).eval()
    spec_cfg = ModalityConfig(name="spec_codes", kind="discrete", field="spectrum", codec="aion",
                              codec_name="spectrum", vocab_size=32, max_tokens=80)
    spec_mod = DiscreteModality(spec_cfg, codec=AIONCodec(spec_cfg, codec=spec_codec))
    rng = np.random.default_rng(1)
    spectra = [{"id": f"s{i}", "spectrum": rng.random(n).astype(np.float32),
                "spectrum_wavelength": np.linspace(3600, 9800, n).astype(np.float32)} for i, n in enumerate((300, 420))]
    spec_tokens = spec_mod.tokenize_records(spectra)
    assert spec_tokens.values.shape[0] == 2 and int(spec_tokens.values.max()) < 32

    # The codes train a discrete modality of the model (cross-entropy, finite gradients).
    model = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=720, modalities=[image_cfg, spec_cfg],
                                modality_tokens=True))
    batch = {"codes": tokens.values, "spec_codes": spec_tokens.values}
    if spec_tokens.mask is not None:
        batch["spec_codes_mask"] = spec_tokens.mask
    loss = model.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and model.encoders["codes"].weight.grad.abs().sum() > 0
