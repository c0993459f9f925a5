"""The model core: causality, embeddings per layer, KV-cached decoding, save/load, and
that a tiny model can fit one batch."""

import json

import pytest
import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.modalities import build_modality
from astropt.model import AstroPT, PretrainedError, load_pretrained, save_pretrained


def tiny_config(**kw) -> ModelConfig:
    mods = [ModalityConfig(name="images", kind="image", image_size=16, patch_size=4, n_channels=2)]
    defaults = dict(n_layer=3, n_head=2, n_embd=32, block_size=24, modalities=mods)
    return ModelConfig(**(defaults | kw))


def image_batch(b=2, seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return {"images": torch.randn(b, n, 32, generator=g), "images_positions": torch.arange(n).expand(b, -1)}


@pytest.fixture
def model():
    torch.manual_seed(0)
    return AstroPT(tiny_config()).eval()


def test_changing_token_k_changes_no_earlier_prediction(model):
    batch = image_batch()
    with torch.no_grad():
        base = model.predict_all(batch)["images"]
    for k in (1, 7, 15):
        changed = {**batch, "images": batch["images"].clone()}
        changed["images"][:, k] += 3.0
        with torch.no_grad():
            out = model.predict_all(changed)["images"]
        torch.testing.assert_close(out[:, :k], base[:, :k], atol=0, rtol=0)
        assert (out[:, k] - base[:, k]).abs().max() > 1e-4  # and the token itself does matter


def test_embed_at_layer_k_is_the_hidden_state_after_block_k(model):
    batch = image_batch()
    after = []
    hooks = [blk.register_forward_hook(lambda m, i, o: after.append(o)) for blk in model.blocks]
    with torch.no_grad():
        model(batch)
    for h in hooks:
        h.remove()
    per_layer = model.embed_all_layers(batch)
    for k in range(model.config.n_layer):
        tokens = model.embed(batch, layer=k, pool="none")["images"]
        torch.testing.assert_close(tokens, after[k], atol=0, rtol=0)
        torch.testing.assert_close(model.embed(batch, layer=k)["images"], after[k].mean(1), atol=1e-6, rtol=0)
        torch.testing.assert_close(per_layer[k]["images"], after[k].mean(1), atol=1e-6, rtol=0)
    # the default: after block n_layer // 2, no final LayerNorm, mean-pooled
    default = model.embed(batch)["images"]
    torch.testing.assert_close(default, after[model.config.n_layer // 2].mean(1), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        model.embed(batch, layer=model.config.n_layer)


def test_kv_cache_decoding_equals_full_forward(model):
    given = image_batch(n=8)
    n_new = 6
    cached = model.generate(given, "images", n_new, use_cache=True)
    full = model.generate(given, "images", n_new, use_cache=False)
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=0)
    # and each new token is the last-position prediction of the growing sequence
    tokens = given["images"]
    for i in range(n_new):
        n = tokens.shape[1]
        with torch.no_grad():
            pred = model.predict_all({"images": tokens, "images_positions": torch.arange(n).expand(2, -1)})
        nxt = pred["images"][:, -1:]
        torch.testing.assert_close(cached[:, i : i + 1], nxt, atol=1e-5, rtol=0)
        tokens = torch.cat([tokens, nxt], dim=1)


def test_generation_longer_than_block_size_is_refused(model):
    with pytest.raises(ValueError, match="block_size"):
        model.generate(image_batch(n=16), "images", 10)


def test_save_load_round_trip(tmp_path, model):
    out = save_pretrained(model, tmp_path / "m", extra={"note": "tiny"})
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    loaded = load_pretrained(out)
    assert loaded.config == model.config
    batch = image_batch(seed=3)
    torch.testing.assert_close(loaded.embed(batch)["images"], model.embed(batch)["images"], atol=0, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(loaded.predict_all(batch)["images"], model.predict_all(batch)["images"],
                                   atol=0, rtol=0)
    assert json.loads((out / "config.json").read_text())["extra"] == {"note": "tiny"}
    # the tokenisation travels with the weights
    assert loaded.config.modality("images").patch_order == "spiral"


def test_truncated_weights_name_the_file(tmp_path, model):
    out = save_pretrained(model, tmp_path / "m")
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    with pytest.raises(PretrainedError, match="model.safetensors"):
        load_pretrained(out)


def test_missing_config_json_is_an_error(tmp_path, model):
    out = save_pretrained(model, tmp_path / "m")
    (out / "config.json").unlink()
    with pytest.raises(PretrainedError, match="config.json"):
        load_pretrained(out)


def test_weights_that_do_not_match_the_config_are_listed(tmp_path, model):
    out = save_pretrained(model, tmp_path / "m")
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["n_layer"] = 4
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(PretrainedError, match="blocks.3"):
        load_pretrained(out)


def test_block_size_is_enforced(model):
    n = model.config.block_size + 1
    positions = torch.arange(n).clamp(max=n - 2)[None]  # valid table indices; too many tokens
    with pytest.raises(ValueError, match="block_size"):
        model({"images": torch.randn(1, n, 32), "images_positions": positions})


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    cfg = tiny_config(n_layer=2, n_embd=32)
    model = AstroPT(cfg)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(16.0), torch.arange(16.0), indexing="ij")
    images = []
    for _ in range(4):  # smooth galaxies: blobs with random centres and widths
        cy, cx, s = torch.rand(3, generator=g) * torch.tensor([6.0, 6.0, 2.0]) + torch.tensor([5.0, 5.0, 1.5])
        blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * s**2))
        images.append(torch.stack([blob, 0.5 * blob + 0.1 * blob.T]))
    tokens = build_modality(cfg.modalities[0]).tokenize(torch.stack(images))
    batch = {"images": tokens.values, "images_positions": tokens.positions}
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = model.loss(batch).item()
    for _ in range(150):  # ~40x lower at 150 steps; 10x leaves a wide margin
        loss = model.loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first / 10, (first, loss.item())
