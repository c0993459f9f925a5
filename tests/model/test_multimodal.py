"""Multimodal AstroPT: padding invariance, missing modalities, shuffled order, cross-modal
generation with and without the KV cache."""

import numpy as np
import pytest
import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.modalities import build_modality
from astropt.model.astropt import AstroPT

WINDOW = 8


def model_config(order="config", **kw):
    mods = [
        ModalityConfig(name="images", kind="image", image_size=16, patch_size=8, n_channels=2),
        ModalityConfig(name="spectrum", kind="spectrum", patch_size=WINDOW, max_tokens=6),
        ModalityConfig(name="cat", kind="scalars", scalar_names=["mag", "colour"]),
    ]
    defaults = dict(n_layer=2, n_head=2, n_embd=32, block_size=64, modalities=mods,
                    modality_order=order, modality_tokens=True)
    return ModelConfig(**(defaults | kw))


def records(n=4, seed=0, lengths=None):
    """Tiny objects whose image brightness, spectrum shape and scalars share one latent."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        z = rng.uniform(0.1, 1.0)
        size = lengths[i] if lengths else 48
        wl = np.linspace(4000, 8000, size)
        yy, xx = np.mgrid[:16, :16] - 7.5
        blob = np.exp(-(xx**2 + yy**2) / (2 * (2 + 3 * z) ** 2))
        out.append({
            "id": f"obj{i}",
            "image": np.stack([blob, blob * (1 + z)]).astype(np.float32) + 0.01 * rng.normal(size=(2, 16, 16)),
            "spectrum": 1 + np.exp(-0.5 * ((wl - 4000 * (1 + z)) / 150) ** 2) + 0.01 * rng.normal(size=size),
            "spectrum_wavelength": wl,
            "labels": {"mag": 20 + z, "colour": z},
        })
    return out


def collate(cfg, recs):
    batch = {}
    for m in cfg.modalities:
        t = build_modality(m).tokenize_records(recs)
        batch[m.name], batch[f"{m.name}_positions"] = t.values, t.positions
        if t.mask is not None:
            batch[f"{m.name}_mask"] = t.mask
    return batch


def real_outputs(model, batch, row):
    """Final hidden states of one row's real tokens, per modality."""
    h, seq = model(batch)
    out = {}
    for s in seq.segments:
        mask = batch.get(f"{s.name}_mask")
        keep = slice(None) if mask is None else mask[row]
        out[s.name] = h[row, s.start : s.start + s.length][keep]
    return out


@pytest.mark.parametrize("order", ["config", "sorted"])
def test_padding_changes_nothing_for_real_tokens(order):
    torch.manual_seed(0)
    cfg = model_config(order)
    model = AstroPT(cfg).eval()
    recs = records(3, lengths=[20, 48, 33])
    recs[2]["labels"].pop("colour")  # a masked scalar as well
    padded = collate(cfg, recs)
    assert padded["spectrum_mask"].sum(1).tolist() == [3, 6, 5]
    for row in (0, 2):
        alone = collate(cfg, [recs[row]])
        got, want = real_outputs(model, padded, row), real_outputs(model, alone, 0)
        for name in want:
            torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
        e_pad, e_one = model.embed(padded), model.embed(alone)
        for name in ("images", "spectrum", "cat", "joint"):
            torch.testing.assert_close(e_pad[name][row], e_one[name][0], atol=1e-5, rtol=1e-5)


def test_missing_modality_equals_absent_modality():
    torch.manual_seed(0)
    cfg = model_config(modalities=model_config().modalities[:2][::-1])  # spectrum first
    model = AstroPT(cfg).eval()
    recs = records(2)
    del recs[1]["spectrum"]
    both = collate(cfg, recs)
    assert not both["spectrum_mask"][1].any()
    h, _ = model(both)
    assert torch.isfinite(h).all()  # all-padding rows produce no NaN
    image_only = {k: v for k, v in collate(cfg, recs[1:]).items() if k.startswith("images")}
    torch.testing.assert_close(real_outputs(model, both, 1)["images"], real_outputs(model, image_only, 0)["images"], atol=1e-5, rtol=1e-5)
    loss = model.loss(both)
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_shuffled_order_still_trains():
    torch.manual_seed(0)
    cfg = model_config("shuffle")
    model = AstroPT(cfg)
    batch = collate(cfg, records(8, lengths=[48, 40, 33, 48, 20, 48, 41, 48]))
    seen = {tuple(s.name for s in model.assemble(batch).segments) for _ in range(20)}
    assert len(seen) > 1  # the order really is drawn in training mode
    model.eval()
    assert [s.name for s in model.assemble(batch).segments] == ["images", "spectrum", "cat"]
    before = model.loss(batch).item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(40):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    model.eval()
    after = model.loss(batch).item()
    assert after < 0.7 * before, (before, after)


def test_loss_uses_per_sample_weights_from_batch():
    torch.manual_seed(0)
    cfg = model_config()
    model = AstroPT(cfg).eval()
    recs = records(2, lengths=[44, 44])  # last window half padding
    batch = collate(cfg, recs)
    weights = build_modality(cfg.modality("spectrum")).tokenize_records(recs).stats["weights"]
    assert weights[:, -1, 4:].sum() == 0
    plain = model.loss(batch)
    weighted = model.loss(dict(batch, spectrum_weights=weights))
    zero = model.loss(dict(batch, spectrum_weights=torch.zeros_like(weights)))
    assert weighted != plain and zero < weighted


@pytest.mark.parametrize("missing_scalar", [False, True])
def test_cross_modal_generation_cache_agrees(missing_scalar):
    torch.manual_seed(0)
    cfg = model_config()
    model = AstroPT(cfg).eval()
    recs = records(3)
    if missing_scalar:
        recs[0]["labels"].pop("mag")  # a key mask in the prefix
    batch = collate(cfg, recs)
    truth = {k: batch.pop(k) for k in [k for k in batch if k.startswith("spectrum")]}
    n_new = truth["spectrum"].shape[1]
    kw = dict(target="spectrum", n_new=n_new, target_positions=truth["spectrum_positions"])
    cached = model.generate(batch, use_cache=True, **kw)
    plain = model.generate(batch, use_cache=False, **kw)
    assert cached.shape == (3, n_new, WINDOW)
    torch.testing.assert_close(cached, plain, atol=1e-5, rtol=1e-5)
    # The first generated window is what the full forward pass predicts after the begin token.
    full = dict(batch, **truth)
    full_order = AstroPT(model_config(modalities=[cfg.modalities[0], cfg.modalities[2], cfg.modalities[1]]))
    full_order.load_state_dict(model.state_dict())
    h, seq = full_order.eval()(full)
    first = full_order.decode("spectrum", h[:, seq.segments[-1].start - 1])
    torch.testing.assert_close(cached[:, 0], first, atol=1e-5, rtol=1e-5)


def test_light_curves_and_scalars_pad_and_train():
    """Ragged light curves (continuous time positions) next to catalogue scalars."""
    rng = np.random.default_rng(1)
    mods = [
        ModalityConfig(name="lc", kind="timeseries", field="lightcurve", bands=["g", "r"], max_tokens=24),
        ModalityConfig(name="cat", kind="scalars", scalar_names=["period"]),
    ]
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, modalities=mods,
                      modality_order="config", modality_tokens=True)
    recs = []
    for i, n in enumerate([24, 9, 17, 12]):
        t = np.sort(rng.uniform(0, 30, n))
        period = rng.uniform(2, 6)
        recs.append({"id": f"v{i}", "lightcurve_time": t, "lightcurve_band": rng.integers(0, 2, n),
                     "lightcurve_flux": np.sin(2 * np.pi * t / period), "lightcurve_err": np.full(n, 0.1),
                     "labels": {"period": period}})
    torch.manual_seed(0)
    model = AstroPT(cfg).eval()
    batch = collate(cfg, recs)
    alone = collate(cfg, recs[1:2])
    got, want = real_outputs(model, batch, 1), real_outputs(model, alone, 0)
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-5)
    before = model.loss(batch).item()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(30):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()
    assert model.eval().loss(batch).item() < 0.7 * before
