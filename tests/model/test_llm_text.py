"""Text interleaved with observations in the LLM backbone (``model.text``): the tokenizer's
round trip, strings tokenised inside the model, text answers, and refusals."""

from __future__ import annotations

import pytest
import torch

from astropt.config import TEXT, LLMConfig, ModalityConfig, ModelConfig, TextConfig
from astropt.model.astropt import AstroPT
from astropt.model.backbones import TEXT_BEGIN, TEXT_END


def text_config(max_tokens: int = 8, **overrides) -> ModelConfig:
    image = ModalityConfig(name="images", image_size=8, n_channels=1, patch_size=4)
    kwargs = dict(n_layer=2, n_head=2, n_embd=16, block_size=32, backbone="llm", modality_tokens=True,
                  tokeniser="affine", modalities=[image], llm=LLMConfig(intermediate_size=32, lora_r=2),
                  text=TextConfig(column="caption", max_tokens=max_tokens))
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


@pytest.fixture(scope="module")
def model() -> AstroPT:
    torch.manual_seed(0)
    return AstroPT(text_config()).eval()


def images(b: int = 2) -> dict[str, torch.Tensor]:
    return {"images": torch.randn(b, 4, 16, generator=torch.Generator().manual_seed(0))}


def test_text_tokens_round_trip_between_begin_and_end(model):
    llm = model.llm
    texts = ["a red spiral galaxy", "redshift 0.53"]
    ids, mask = llm.text_ids(texts, max_tokens=8)
    begin, end = llm.special_ids[TEXT_BEGIN], llm.special_ids[TEXT_END]
    for row, m in zip(ids.tolist(), mask.tolist(), strict=True):
        real = [i for i, keep in zip(row, m, strict=True) if keep]
        assert real[0] == begin and real[-1] == end and begin not in real[1:-1]
        decoded = llm.tokenizer.decode(real[1:-1])
        assert llm.tokenizer(decoded, add_special_tokens=False)["input_ids"] == real[1:-1]
        assert llm.tokenizer.unk_token_id not in real
    assert llm.tokenizer.decode(ids[0, 1:5].tolist()) == texts[0]
    assert llm.tokenizer.decode(ids[1, 1:6].tolist()) == "redshift 0 . 5 3"  # digit by digit
    assert mask[1].sum() == 7 and not mask[0, -1]  # right-padded, padding masked
    cut, cut_mask = llm.text_ids(["a b c d e f"], max_tokens=3)
    assert cut_mask.all() and cut.shape == (1, 5) and cut[0, -1] == end


def test_strings_in_a_batch_are_tokenised_by_the_model(model):
    captions = ["a red spiral galaxy", "a star"]
    ids, mask = model.llm.text_ids(captions, model.config.text.max_tokens)
    with_ids = dict(images(), **{TEXT: ids, f"{TEXT}_mask": mask})
    with_strings = dict(images(), **{TEXT: captions})
    torch.testing.assert_close(model.loss(with_strings), model.loss(with_ids))
    assert model.loss(with_strings).item() != pytest.approx(model.loss(images()).item())
    h, seq = model(with_strings)
    assert [s.name for s in seq.segments] == ["images", TEXT] and seq.segments[1].length == ids.shape[1]


def test_a_text_answer_follows_the_observations(model):
    answers = model.generate_text(images(), "redshift", max_new_tokens=5)
    assert len(answers) == 2 and answers == model.generate_text(images(), "redshift", max_new_tokens=5)
    assert all(TEXT_END not in a and TEXT_BEGIN not in a for a in answers)
    assert model.llm.decode_text([model.llm.special_ids[TEXT_BEGIN], 7, model.llm.special_ids[TEXT_END], 8]) \
        == model.llm.tokenizer.decode([model.llm.special_ids[TEXT_BEGIN], 7])


def test_the_native_model_refuses_a_batch_with_text():
    image = ModalityConfig(name="images", image_size=8, n_channels=1, patch_size=4)
    native = AstroPT(ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=32, modalities=[image]))
    with pytest.raises(ValueError, match="native backbone, which has no text vocabulary"):
        native.loss(dict(images(), **{TEXT: ["a star", "a galaxy"]}))


def test_a_model_built_without_text_says_how_to_get_it():
    plain = AstroPT(text_config(text=TextConfig()))
    assert TEXT_BEGIN not in plain.llm.tokenizer.get_vocab()  # its vocabulary is unchanged
    with pytest.raises(ValueError, match="built without model.text"):
        plain.loss(dict(images(), **{TEXT: ["a star", "a galaxy"]}))


def test_words_the_tokenizer_does_not_know_are_named_once(caplog):
    model = AstroPT(text_config())
    with caplog.at_level("WARNING", logger="astropt.model.backbones"):
        model.llm.text_ids(["a galaxy", "a quokka galaxy", "a wombat"], max_tokens=8)
        model.llm.text_ids(["a wombat"], max_tokens=8)
    assert caplog.text.count("does not know") == 1 and "'a quokka galaxy'" in caplog.text
