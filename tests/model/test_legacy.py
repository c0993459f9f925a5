"""Import of reference ``ckpt.pt`` checkpoints: equivalence, both key generations, LoRA,
safety against pickled code, clear errors; and parity with real reference output."""

import dataclasses
import json
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from astropt.cli import main
from astropt.config import ModalityConfig, ModelConfig
from astropt.modalities import build_modality
from astropt.model import AstroPT, PretrainedError, convert_reference_checkpoint, load_pretrained
from astropt.model.legacy import read_reference_checkpoint

load_reference_checkpoint = AstroPT.from_pretrained

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reference"


# ----------------------------------------------------------------------------- fixtures
def make_reference_classes(module: str):
    """Classes shaped like the reference's ModalityConfig/ModalityRegistry, named ``module.X``."""

    @dataclasses.dataclass
    class ModalityConfig:
        name: str
        input_size: int
        pos_input_size: int
        patch_size: int
        embed_pos: bool
        loss_weight: float = 1.0

    class ModalityRegistry:
        def __init__(self, modalities):
            self.modalities = {m.name: m for m in modalities}

    for cls in (ModalityConfig, ModalityRegistry):
        cls.__module__, cls.__qualname__ = module, cls.__name__
    return ModalityConfig, ModalityRegistry


@pytest.fixture(params=["astropt.model", "model"])
def ref_classes(request, monkeypatch):
    """The two classes, pickled under one of the reference's qualified module names."""
    module = request.param
    if module == "model":
        monkeypatch.setitem(sys.modules, "model", types.ModuleType("model"))
    classes = make_reference_classes(module)
    for cls in classes:
        monkeypatch.setattr(sys.modules[module], cls.__name__, cls, raising=False)
    return classes


def our_config(multimodal: bool, tokeniser: str = "aim") -> ModelConfig:
    mods = [ModalityConfig(name="images", kind="image", image_size=16, patch_size=4, n_channels=2)]
    if multimodal:
        mods.append(ModalityConfig(name="fluxes", kind="tokens", input_size=5, max_tokens=8,
                                   position="continuous", pos_input_size=2))
    return ModelConfig(n_layer=3, n_head=2, n_embd=16, block_size=32, tokeniser=tokeniser,
                       modalities=mods, embed_layer=1)


def to_reference_keys(state: dict, generation: str, prefix: str = "") -> dict:
    """Our state dict under the reference's parameter names."""
    out = {}
    for k, v in state.items():
        head, _, rest = k.partition(".")
        if generation == "old" and head in ("encoders", "embedders", "decoders"):
            k = {"encoders": "transformer.wte.", "embedders": "transformer.wpe.",
                 "decoders": "lm_head."}[head] + rest
        elif head == "blocks":
            k = "transformer.h." + rest
        elif head == "ln_f":
            k = "transformer.ln_f." + rest
        out[prefix + k] = v.clone()
    return out


def write_reference_ckpt(path, model, classes, generation="old", prefix="", lora_r=0, state=None):
    cfg_cls, reg_cls = classes
    c = model.config
    mods = [cfg_cls("images", c.modalities[0].input_size, 1, 4, True)]
    if len(c.modalities) > 1:
        mods.append(cfg_cls("fluxes", 5, 2, 0, False))
    args = dict(block_size=c.block_size, n_layer=c.n_layer, n_head=c.n_head, n_embd=c.n_embd,
                n_chan=2, dropout=0.0, bias=c.bias, attn_type="causal")
    if generation == "new" or c.tokeniser != "aim" or lora_r:
        args.update(tokeniser=c.tokeniser, lora_r=lora_r, lora_alpha=16, modalities=mods)
    ckpt = {
        "model": state if state is not None else to_reference_keys(model.state_dict(), generation, prefix),
        "model_args": args,
        "modality_registry": reg_cls(mods),
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        "iter_num": 1234,
        "best_val_loss": torch.tensor(0.25),
        "config": {"batch_size": 8, "learning_rate": 6e-4, "dataset": "desi", "spiral": True},
    }
    torch.save(ckpt, path)
    return path


def batch_for(model, seed=0, b=3):
    g = torch.Generator().manual_seed(seed)
    batch = {}
    for m in model.config.modalities:
        n = m.n_tokens
        batch[m.name] = torch.randn(b, n, m.input_size, generator=g)
        if m.position == "learned":
            batch[f"{m.name}_positions"] = torch.arange(n).expand(b, -1)
        else:
            batch[f"{m.name}_positions"] = torch.randn(b, n, m.pos_input_size, generator=g)
    return batch


def assert_same_model(a: AstroPT, b: AstroPT, batch, atol=1e-6):
    ea, eb = a.embed(batch), b.embed(batch)
    assert ea.keys() == eb.keys()
    for k in ea:
        torch.testing.assert_close(ea[k], eb[k], atol=atol, rtol=0)
    with torch.no_grad():
        pa, pb = a.predict_all(batch), b.predict_all(batch)
    for k in pa:
        torch.testing.assert_close(pa[k], pb[k], atol=atol, rtol=0)


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("generation,prefix", [("old", ""), ("new", ""), ("old", "_orig_mod."), ("new", "_orig_mod.")])
@pytest.mark.parametrize("multimodal", [False, True])
def test_both_generations_and_compile_prefix_give_the_same_model(tmp_path, ref_classes, generation, prefix,
                                                                   multimodal):
    torch.manual_seed(0)
    model = AstroPT(our_config(multimodal)).eval()
    path = write_reference_ckpt(tmp_path / "ckpt.pt", model, ref_classes, generation, prefix)
    loaded = load_reference_checkpoint(path)
    assert [m.name for m in loaded.config.modalities] == [m.name for m in model.config.modalities]
    assert loaded.config.default_embed_layer == model.config.n_layer // 2
    assert_same_model(model, loaded, batch_for(model), atol=0)


def test_modality_mapping(tmp_path, ref_classes):
    model = AstroPT(our_config(True)).eval()
    cfg = load_reference_checkpoint(write_reference_ckpt(tmp_path / "c.pt", model, ref_classes)).config
    images, fluxes = cfg.modality("images"), cfg.modality("fluxes")
    assert (images.kind, images.patch_size, images.n_channels, images.position) == ("image", 4, 2, "learned")
    assert (images.patch_order, images.normalize) == ("spiral", "patch")
    assert (fluxes.kind, fluxes.input_size, fluxes.position, fluxes.pos_input_size) == ("tokens", 5, "continuous", 2)
    assert cfg.sequence_length <= cfg.block_size
    assert (cfg.modality_order, cfg.modality_tokens, cfg.attn) == ("sorted", False, "causal")


def test_affine_tokeniser(tmp_path, ref_classes):
    torch.manual_seed(1)
    model = AstroPT(our_config(True, tokeniser="affine")).eval()
    loaded = load_reference_checkpoint(write_reference_ckpt(tmp_path / "c.pt", model, ref_classes, "new"))
    assert loaded.config.tokeniser == "affine"
    assert_same_model(model, loaded, batch_for(model), atol=0)


def test_lora_weights_are_merged_with_loralib_scaling(tmp_path, ref_classes):
    """2.0.x builds ``lora.Linear(..., r=r)`` (alpha 1): W_eff = W + B @ A / r."""
    torch.manual_seed(2)
    model = AstroPT(our_config(False)).eval()
    r = 4
    state = to_reference_keys(model.state_dict(), "old")
    g = torch.Generator().manual_seed(3)
    for i in range(model.config.n_layer):
        key = f"transformer.h.{i}.attn.c_attn"
        w = state[f"{key}.weight"]
        a = torch.randn(r, w.shape[1], generator=g) * 0.1
        b = torch.randn(w.shape[0], r, generator=g) * 0.1
        state[f"{key}.weight"] = w - (b @ a) / r  # so that the merged weight is the model's
        state[f"{key}.lora_A"], state[f"{key}.lora_B"] = a, b
    path = write_reference_ckpt(tmp_path / "lora.pt", model, ref_classes, "old", lora_r=r, state=state)
    assert_same_model(model, load_reference_checkpoint(path), batch_for(model), atol=1e-5)
    # the LoRA update matters: ignoring it changes the embeddings
    wrong = load_reference_checkpoint(path, lora_scale=0.5)
    with pytest.raises(AssertionError):
        assert_same_model(model, wrong, batch_for(model), atol=1e-5)


def test_convert_then_from_pretrained(tmp_path, ref_classes):
    torch.manual_seed(4)
    model = AstroPT(our_config(True)).eval()
    path = write_reference_ckpt(tmp_path / "ckpt.pt", model, ref_classes)
    out = convert_reference_checkpoint(path, tmp_path / "converted")
    meta = json.loads((out / "config.json").read_text())
    assert meta["extra"]["converted_from"] == "ckpt.pt"
    ref = meta["extra"]["reference"]
    assert ref["generation"] == "v2" and ref["iter_num"] == 1234
    assert ref["best_val_loss"] == pytest.approx(0.25)
    assert ref["reference_model_args"]["n_layer"] == 3
    assert_same_model(model, AstroPT.from_pretrained(out), batch_for(model), atol=0)
    # load_pretrained on the file goes through the same import
    assert_same_model(model, load_pretrained(path), batch_for(model), atol=0)


def test_cli_convert(tmp_path, ref_classes, capsys):
    model = AstroPT(our_config(False)).eval()
    path = write_reference_ckpt(tmp_path / "ckpt.pt", model, ref_classes)
    assert main(["convert", str(path), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert main(["convert", str(tmp_path / "nope.pt"), "--out", str(tmp_path / "o2")]) == 2
    assert "nope.pt" in capsys.readouterr().err


# ----------------------------------------------------------------------------- errors
def test_missing_and_unknown_tensors_are_listed(tmp_path, ref_classes):
    model = AstroPT(our_config(False)).eval()
    state = to_reference_keys(model.state_dict(), "old")
    del state["transformer.h.1.mlp.c_fc.weight"]
    state["transformer.h.0.attn.rotary.weight"] = torch.zeros(3)
    path = write_reference_ckpt(tmp_path / "bad.pt", model, ref_classes, state=state)
    with pytest.raises(PretrainedError) as err:
        load_reference_checkpoint(path)
    msg = str(err.value)
    assert "bad.pt" in msg and "blocks.1.mlp.c_fc.weight" in msg and "blocks.0.attn.rotary.weight" in msg


def test_truncated_file_is_a_clear_error(tmp_path, ref_classes):
    model = AstroPT(our_config(False)).eval()
    path = write_reference_ckpt(tmp_path / "ckpt.pt", model, ref_classes)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(PretrainedError, match="cut.pt.*truncated"):
        load_reference_checkpoint(cut)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(PretrainedError, match="junk.pt"):
        read_reference_checkpoint(junk)


class Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class EvilEval:
    def __reduce__(self):
        return (eval, ("__import__('os').system('true')",))


@pytest.mark.parametrize("legacy_format", [False, True])
def test_pickled_code_is_refused_without_running_it(tmp_path, ref_classes, legacy_format):
    marker = tmp_path / "pwned"
    model = AstroPT(our_config(False)).eval()
    ckpt = {"model": to_reference_keys(model.state_dict(), "old"), "model_args": {"n_layer": 3},
            "config": {"x": Evil(marker)}}
    path = tmp_path / "evil.pt"
    torch.save(ckpt, path, _use_new_zipfile_serialization=not legacy_format)
    with pytest.raises(PretrainedError, match=r"evil\.pt.*refused.*system"):
        read_reference_checkpoint(path)
    assert not marker.exists()
    torch.save({"model": {}, "model_args": EvilEval()}, path)
    with pytest.raises(PretrainedError, match=r"evil\.pt.*refused.*eval"):
        load_reference_checkpoint(path)


def test_unknown_class_is_refused(tmp_path):
    @dataclasses.dataclass
    class Unknown:
        x: int = 1

    path = tmp_path / "c.pt"
    Unknown.__qualname__ = "Unknown"
    Unknown.__module__ = __name__
    globals()["Unknown"] = Unknown
    torch.save({"model": {}, "model_args": {}, "modality_registry": Unknown()}, path)
    with pytest.raises(PretrainedError, match="Unknown"):
        read_reference_checkpoint(path)


def test_unsupported_reference_settings(tmp_path, ref_classes):
    model = AstroPT(our_config(False)).eval()
    path = write_reference_ckpt(tmp_path / "c.pt", model, ref_classes)
    ckpt = read_reference_checkpoint(path)
    ckpt["model_args"]["attn_type"] = "prefix"
    cfg_cls, reg_cls = ref_classes
    ckpt["modality_registry"] = reg_cls([cfg_cls("images", 32, 1, 4, True)])
    torch.save(ckpt, path)
    with pytest.raises(PretrainedError, match="prefix"):
        load_reference_checkpoint(path)


# ----------------------------------------------------------------------------- real reference
def test_real_reference_checkpoint_tokens_embeddings_predictions(tmp_path):
    """Output of the reference implementation itself (see fixtures/reference/README.md)."""
    expected = np.load(FIXTURES / "expected_v2.npz")
    model = load_reference_checkpoint(FIXTURES / "ckpt_v2_tiny.pt")
    images_cfg = model.config.modality("images")
    tokens = build_modality(images_cfg).tokenize(torch.from_numpy(expected["images"]))
    np.testing.assert_allclose(tokens.values.numpy(), expected["tokens"], atol=1e-5, rtol=0)
    batch = {"images": torch.from_numpy(expected["tokens"]), "images_positions": tokens.positions}

    def check(m):
        np.testing.assert_allclose(m.embed(batch)["images"].numpy(), expected["embeddings"], atol=1e-5, rtol=0)
        with torch.no_grad():
            pred = m.predict_all(batch)["images"].numpy()
        np.testing.assert_allclose(pred, expected["predictions"], atol=1e-5, rtol=0)

    check(model)
    out = convert_reference_checkpoint(FIXTURES / "ckpt_v2_tiny.pt", tmp_path / "desi-tiny")
    check(AstroPT.from_pretrained(out))
    # the fixture's image is reproduced from its tokens (the tokeniser's inverse)
    back = build_modality(images_cfg).detokenize(tokens)
    np.testing.assert_allclose(back.numpy(), expected["images"], atol=1e-4 * np.abs(expected["images"]).max())


@pytest.mark.parametrize("content, reason", [
    (b"\x80\x04" + b"junk that is no pickle at all", "not a reference AstroPT checkpoint"),
    (None, "not a reference AstroPT checkpoint"),  # a plain pickle of a dict
    (bytes(range(256)) * 4, "not a checkpoint"),  # random bytes
])
def test_non_checkpoints_are_named_without_unsafe_advice(tmp_path, content, reason):
    import pickle

    path = tmp_path / "model.pt"
    if content is None:
        path.write_bytes(pickle.dumps({"model": {}, "model_args": {}}, protocol=4))
    else:
        path.write_bytes(content)
    with pytest.raises(PretrainedError, match=reason) as err:
        AstroPT.from_pretrained(path)
    assert "model.pt" in str(err.value) and "weights_only" not in str(err.value)
