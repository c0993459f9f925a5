"""The LLM backbone (a tiny Llama built offline): causality, learning, LoRA, save/load, KV
cache, special tokens, text, and reference v3 checkpoints."""

from __future__ import annotations

import logging

import pytest
import torch

from astropt.config import ConfigError, LLMConfig, ModalityConfig, ModelConfig
from astropt.errors import PretrainedError
from astropt.model.astropt import AstroPT
from astropt.model.backbones import TEXT, _qlora_available, special_tokens


def llm_config(lora_r: int = 4, **overrides) -> ModelConfig:
    image = ModalityConfig(name="images", image_size=16, n_channels=1, patch_size=4)
    kwargs = dict(n_layer=3, n_head=4, n_embd=32, block_size=48, backbone="llm", modality_tokens=True,
                  tokeniser="affine", modalities=[image], llm=LLMConfig(intermediate_size=64, lora_r=lora_r))
    kwargs.update(overrides)
    return ModelConfig(**kwargs)


@pytest.fixture(scope="module")
def model() -> AstroPT:
    torch.manual_seed(0)
    m = AstroPT(llm_config())
    # LoRA's B starts at zero; give the adapters a value so that they matter in the tests.
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return m.eval()


def batch(b: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(b, 16, 16, generator=g)}


def test_a_change_at_token_t_changes_no_output_before_t(model):
    x = batch()
    h, seq = model(x)
    t = 7
    y = {"images": x["images"].clone()}
    y["images"][:, t] += 5.0
    h2, _ = model(y)
    pos = seq.segments[0].start + t  # sequence position of image token t
    assert torch.equal(h[:, :pos], h2[:, :pos])
    assert not torch.allclose(h[:, pos:], h2[:, pos:])


def test_lora_trains_only_adapters_and_the_loss_goes_down():
    torch.manual_seed(1)
    m = AstroPT(llm_config())
    llm_trainable = [n for n, p in m.llm.named_parameters() if p.requires_grad]
    assert llm_trainable and all("lora_" in n for n in llm_trainable)
    base_before = {n: p.detach().clone() for n, p in m.llm.named_parameters() if not p.requires_grad}
    opt = torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=3e-3)
    x = batch(4)
    losses = []
    for _ in range(12):
        loss = m.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(p, base_before[n]) for n, p in m.llm.named_parameters() if n in base_before)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in m.llm.named_parameters() if "lora_B" in n)


def test_without_a_rank_the_llm_is_frozen():
    m = AstroPT(llm_config(lora_r=0))
    assert not any(p.requires_grad for p in m.llm.parameters())
    assert all(p.requires_grad for p in m.encoders.parameters())


def test_save_load_round_trip_gives_equal_outputs(model, tmp_path):
    x = batch()
    model.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "llm" / "config.json").is_file()
    loaded = AstroPT.from_pretrained(tmp_path / "m")
    assert loaded.llm.tokenizer.get_vocab() == model.llm.tokenizer.get_vocab()
    torch.testing.assert_close(loaded.embed(x)["images"], model.embed(x)["images"], rtol=0, atol=0)
    torch.testing.assert_close(loaded.predict_all(x)["images"], model.predict_all(x)["images"], rtol=0, atol=0)


def test_kv_cache_generation_equals_uncached(model):
    x = batch()
    x["images"] = x["images"][:, :6]
    cached = model.generate(x, "images", 4, use_cache=True)
    uncached = model.generate(x, "images", 4, use_cache=False)
    torch.testing.assert_close(cached, uncached, rtol=1e-5, atol=1e-5)
    ids, _ = model.llm.encode_text(["<|end_images|> redshift"] * 2)
    text = dict(x, **{TEXT: ids})
    assert torch.equal(model.generate(text, TEXT, 5, use_cache=True), model.generate(text, TEXT, 5, use_cache=False))


def test_special_tokens_round_trip_through_the_tokenizer(model):
    tok = model.llm.tokenizer
    for token in special_tokens(["images"]):
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and ids[0] == model.llm.special_ids[token]
        assert tok.decode(ids) == token
    ids = tok("<|begin_images|> red galaxy <|end_images|>", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == "<|begin_images|> red galaxy <|end_images|>"
    # The segment opens with the LLM's own embedding of <|begin_images|>.
    seq = model.assemble(batch())
    torch.testing.assert_close(seq.x[0, 0], model.llm.special_embedding("begin", "images"))


def test_text_after_observations_is_trained_and_answered(model):
    x = batch()
    ids, mask = model.llm.encode_text(["<|end_images|> a red spiral galaxy", "<|end_images|> a star"])
    with_text = dict(x, **{TEXT: ids, f"{TEXT}_mask": mask})
    assert model.loss(with_text).item() != pytest.approx(model.loss(x).item())
    answers = model.generate_text(x, "<|end_images|> this", max_new_tokens=4)
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)
    assert answers == model.generate_text(x, "<|end_images|> this", max_new_tokens=4)


def test_embeddings_come_from_the_middle_layer(model):
    x = batch()
    per_layer = model.embed_all_layers(x)
    assert len(per_layer) == 3
    mid = model.embed(x, pool="mean")["images"]
    torch.testing.assert_close(mid, per_layer[model.config.default_embed_layer]["images"])


def test_qlora_without_gpu_or_bitsandbytes_is_skipped_with_a_message(caplog):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with caplog.at_level(logging.WARNING):
        assert not _qlora_available()
    assert "4-bit loading skipped" in caplog.text


def test_a_config_that_does_not_describe_the_llm_is_refused(model, tmp_path):
    llm_dir = model.llm.save_files(tmp_path)
    with pytest.raises(ConfigError, match="set model.n_embd=32"):
        AstroPT(llm_config(n_embd=64), llm_files=str(llm_dir))


# ----------------------------------------------------------------------------- reference v3


def reference_v3(model: AstroPT, llm_dir: str) -> dict:
    """A checkpoint laid out as the reference's main branch saves an LLM-backbone model."""
    state = {("llm." + k[len("llm.model."):] if k.startswith("llm.model.") else k): v
             for k, v in model.state_dict().items()}
    modality = {"name": "images", "input_size": 16, "patch_size": 4, "embed_pos": True, "loss_weight": 1.0}
    args = {"backbone": "llm", "llm_model_name": llm_dir, "lora_r": 4, "lora_alpha": 32.0, "use_qlora": False,
            "n_chan": 1, "tokeniser": "affine", "block_size": 48, "modalities": [modality]}
    return {"model": state, "model_args": args, "modality_registry": None, "iter_num": 10, "best_val_loss": 0.5}


def test_reference_v3_checkpoint_converts_to_equal_outputs(model, tmp_path):
    llm_dir = str(model.llm.save_files(tmp_path))
    path = tmp_path / "ckpt.pt"
    torch.save(reference_v3(model, llm_dir), path)
    loaded = AstroPT.from_pretrained(path)
    assert loaded.config.backbone == "llm" and loaded.config.llm.lora_r == 4
    assert loaded.config.default_embed_layer == 1  # hidden_states[len // 2] of 3 layers
    x = batch()
    torch.testing.assert_close(loaded.predict_all(x)["images"], model.predict_all(x)["images"], rtol=0, atol=0)


@pytest.mark.parametrize("damage, message", [
    ("adapters_only", "LLM weights are not in the checkpoint"),
    ("adapter_name", "adapters named"),
    ("no_name", "llm_model_name"),
])
def test_reference_v3_checkpoint_refused_with_what_is_missing(model, tmp_path, damage, message):
    llm_dir = str(model.llm.save_files(tmp_path))
    ckpt = reference_v3(model, llm_dir)
    if damage == "adapters_only":
        ckpt["model"] = {k: v for k, v in ckpt["model"].items() if not k.startswith("llm.") or "lora_" in k}
    elif damage == "adapter_name":
        ckpt["model"] = {k.replace(".default.", ".astro."): v for k, v in ckpt["model"].items()}
    else:
        del ckpt["model_args"]["llm_model_name"]
    torch.save(ckpt, tmp_path / "ckpt.pt")
    with pytest.raises(PretrainedError, match=message):
        AstroPT.from_pretrained(tmp_path / "ckpt.pt")


def test_a_missing_llm_extra_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    with pytest.raises(ImportError, match=r"astropt\[llm\]"):
        AstroPT(llm_config())
