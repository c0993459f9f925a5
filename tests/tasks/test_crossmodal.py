"""Cross-modal prediction task: image -> spectrum over held-out objects of a shard folder."""

import json

import numpy as np
import pytest
import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.data.loader import Collator, rows_to_records
from astropt.data.shards import ArraySpec, DataError, ShardSet, finalize, write_shard
from astropt.model.astropt import AstroPT
from astropt.tasks.crossmodal import predict_modality, smooth


def survey(n, seed=0):
    """Objects whose image size and spectrum line position share a redshift-like latent."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:16, :16] - 7.5
    out = []
    for i in range(n):
        z = rng.uniform(0.1, 1.0)
        size = int(rng.integers(40, 49))  # spectra of different lengths
        wl = np.linspace(4000, 8000, 48)[:size]
        blob = np.exp(-(xx**2 + yy**2) / (2 * (1 + 4 * z) ** 2))
        out.append({
            "id": f"g{i:03d}",
            "image": np.stack([blob, blob * (1 + z)]) + 0.01 * rng.normal(size=(2, 16, 16)),
            "spectrum": 2 + np.sin(wl / 700 + 3 * z) + np.exp(-0.5 * ((wl - 4000 * (1 + z)) / 200) ** 2),
            "spectrum_wavelength": wl,
            "labels": {"z": z},
        })
    return out


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mm")
    arrays = {"image": ArraySpec([2, 16, 16]), "spectrum": ArraySpec([-1]), "spectrum_wavelength": ArraySpec([-1])}
    entry = write_shard(folder, 0, survey(64), arrays)
    finalize(folder, [entry], arrays, {"z": "float64"})
    return folder


def tiny_model():
    mods = [
        ModalityConfig(name="images", kind="image", image_size=16, patch_size=8, n_channels=2),
        ModalityConfig(name="spectrum", kind="spectrum", patch_size=8, max_tokens=6),
    ]
    return AstroPT(ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32, modalities=mods,
                               modality_order="config", modality_tokens=True))


def test_smooth_is_a_masked_running_mean():
    x = np.array([[1.0, 2.0, 3.0, 100.0, 5.0]])
    valid = np.array([[True, True, True, False, True]])
    got = smooth(x, valid, 3)
    np.testing.assert_allclose(got[0, [0, 1, 2, 4]], [1.5, 2.0, 2.5, 5.0])
    assert np.isnan(got[0, 3])


def test_image_to_spectrum_after_training_beats_flat(data_dir, tmp_path):

    torch.manual_seed(0)
    model = tiny_model()
    data = ShardSet(data_dir)
    batch, _ = Collator(model.config)(rows_to_records(data.get_batch(np.arange(len(data))), data.label_names))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        opt.zero_grad()
        model.loss(batch).backward()
        opt.step()

    result = predict_modality(model, data_dir, "image", "spectrum", tmp_path, n=8)
    assert result["source"] == "images" and result["n"] == 8
    assert result["median_rel_error"] < result["median_rel_error_flat"]
    assert result["token_mse"] < result["token_mse_zero"]
    written = json.loads((tmp_path / "crossmodal_images_to_spectrum.json").read_text())
    assert written["median_rel_error"] == result["median_rel_error"]
    assert (tmp_path / "crossmodal_images_to_spectrum.png").stat().st_size > 1000


def test_missing_field_is_a_clear_error(data_dir):
    model = tiny_model()
    model.config.modalities[1].field = "sed"
    with pytest.raises(DataError, match="'sed'"):
        predict_modality(model, data_dir, "images", "spectrum", None, n=2)
