"""Published models by hub id, offline: the hub cache layout, a local imitation of the hub,
the reference's ``load_astropt`` call, one spelling for subfolders, and every error case."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hubfake import COMMIT, FakeHub, make_cache
from huggingface_hub import constants

from astropt import AstroPT, load_astropt
from astropt.errors import PretrainedError
from astropt.model.hub import HubRef, parse_hub_ref

FIXTURES = Path(__file__).parent.parent / "fixtures" / "reference"
V2 = FIXTURES / "ckpt_v2_tiny.pt"
V2_REPO = "Smith42/astroPT_v2.0"
# The root config.json of the published v2 repository is not an AstroPT config.
ROOT_CONFIG = json.dumps({"model_type": "astropt", "note": "see astropt/"}).encode()


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """A hub cache holding the published v2 layout, with the hub unreachable (offline)."""
    cache = tmp_path / "hub"
    make_cache(cache, V2_REPO, {"config.json": ROOT_CONFIG, "astropt/095M/ckpt.pt": V2,
                                "astropt/015M/ckpt.pt": V2})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def same_weights(a: AstroPT, b: AstroPT) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_one_spelling_of_hub_references():
    assert parse_hub_ref("Smith42/astroPT_v2.0/astropt/095M@v2") == HubRef(V2_REPO, "astropt/095M", "v2")
    assert parse_hub_ref("Smith42/astroPT_v2.0", subfolder="astropt/095M") == HubRef(V2_REPO, "astropt/095M")
    ref = parse_hub_ref("Smith42/astroPT/models/fully_trained/0309M_params/030000_ckpt.pt")
    assert ref.is_file and ref.repo_id == "Smith42/astroPT"
    for local in ("./runs/x", "/abs/path", "~/model", "model.safetensors", "a//b"):
        assert parse_hub_ref(local) is None


def test_from_pretrained_with_subfolder_from_the_offline_cache(offline_cache):
    direct = AstroPT.from_pretrained(V2)
    model = AstroPT.from_pretrained(V2_REPO, subfolder="astropt/095M")
    assert same_weights(model, direct)
    # the published repository's conventions travel with the model
    images = model.config.modality("images")
    assert images.transpose_hw and not direct.config.modality("images").transpose_hw
    pre = model.pretrained_extra["preprocessing"]
    assert pre["dataset"] == "Smith42/galaxies" and pre["column"] == "image_crop"
    assert model.pretrained_extra["source"] == {"repo_id": V2_REPO, "path": "astropt/095M", "revision": None}
    # the same model by the one-string spelling, by the reference's call, and pinned by commit
    assert same_weights(AstroPT.from_pretrained(f"{V2_REPO}/astropt/095M"), direct)
    assert same_weights(load_astropt(V2_REPO, path="astropt/095M", weights_filename="ckpt.pt"), direct)
    assert same_weights(AstroPT.from_pretrained(V2_REPO, subfolder="astropt/095M", revision=COMMIT), direct)


def test_v1_layout_folder_finds_its_only_checkpoint(offline_cache):
    v1 = FIXTURES / "ckpt_v1_tiny_l3.pt"
    make_cache(offline_cache, "Smith42/astroPT", {"models/fully_trained/0001M_params/030000_ckpt.pt": v1,
                                                  "models/fully_trained/0309M_params/005000_ckpt.pt": v1,
                                                  "models/fully_trained/0309M_params/030000_ckpt.pt": v1})
    model = AstroPT.from_pretrained("Smith42/astroPT/models/fully_trained/0001M_params")
    assert same_weights(model, AstroPT.from_pretrained(v1))
    assert model.config.modality("images").transpose_hw  # the DESI HF-image orientation
    with pytest.raises(PretrainedError, match=r"several checkpoints \['005000_ckpt.pt', '030000_ckpt.pt'\]"):
        AstroPT.from_pretrained("Smith42/astroPT", subfolder="models/fully_trained/0309M_params")
    again = AstroPT.from_pretrained("Smith42/astroPT", subfolder="models/fully_trained/0309M_params",
                                    weights_filename="030000_ckpt.pt")
    assert same_weights(again, model)


def test_offline_errors_name_what_is_missing(offline_cache):
    with pytest.raises(PretrainedError, match=r"astropt/095M.*(015M|095M|850M)"):
        AstroPT.from_pretrained(V2_REPO)  # root: no weights; the error lists where they are
    with pytest.raises(PretrainedError, match="no such file or folder here.*not in the local Hugging Face cache"):
        AstroPT.from_pretrained("Smith42/not-cached", subfolder="m")
    with pytest.raises(PretrainedError, match="no such file or folder"):
        AstroPT.from_pretrained("./runs/typo/final")  # a mistyped local path never goes to the hub


def test_saved_folder_on_the_hub_round_trips(tmp_path, offline_cache):
    model = AstroPT.from_pretrained(V2)
    folder = model.save_pretrained(tmp_path / "ours", license="mit", datasets=["Smith42/galaxies"])
    files = {f"tiny/{p.name}": p for p in folder.iterdir()}
    make_cache(offline_cache, "someone/astropt-tiny", files)
    again = AstroPT.from_pretrained("someone/astropt-tiny/tiny")
    assert same_weights(again, model)
    card = (folder / "README.md").read_text()
    meta = yaml.safe_load(card.split("---")[1])
    assert meta["library_name"] == "astropt" and meta["license"] == "mit"
    assert meta["datasets"] == ["Smith42/galaxies"] and "astronomy" in meta["tags"]
    assert "patch_order=spiral" in card


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    repos = {
        V2_REPO: {"config.json": ROOT_CONFIG, "astropt/095M/ckpt.pt": V2.read_bytes(),
                  "broken/ckpt.pt": os.urandom(256)},
        "org/gated-model": {"ckpt.pt": V2.read_bytes()},
    }
    with FakeHub(repos, gated=("org/gated-model",)) as hub:
        monkeypatch.setattr(constants, "ENDPOINT", hub.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        yield hub


def test_download_from_a_hub_then_offline(fake_hub, monkeypatch):
    model = AstroPT.from_pretrained(f"{V2_REPO}/astropt/095M")
    assert same_weights(model, AstroPT.from_pretrained(V2))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # now served from the cache alone
    assert same_weights(AstroPT.from_pretrained(V2_REPO, subfolder="astropt/095M"), model)


@pytest.mark.parametrize("name, kwargs, message", [
    ("nobody/nothing", {}, "no such repository"),
    ("org/gated-model", {}, "gated"),
    (V2_REPO, {"subfolder": "astropt/999M"}, "no astropt/999M/model.safetensors; no astropt/999M/ckpt.pt"),
    (V2_REPO, {"subfolder": "astropt/095M", "revision": "v9"}, "no revision 'v9'"),
    (V2_REPO, {"subfolder": "broken"}, "not a checkpoint"),
])
def test_hub_errors_are_named(fake_hub, name, kwargs, message):
    with pytest.raises(PretrainedError, match=message) as err:
        AstroPT.from_pretrained(name, **kwargs)
    assert "weights_only" not in str(err.value)


def test_push_without_login_is_a_named_error(fake_hub, tmp_path):
    model = AstroPT.from_pretrained(V2)
    with pytest.raises(PretrainedError, match="not allowed to write|upload failed"):
        model.save_pretrained(tmp_path / "m", push_to_hub=True, repo_id="me/model")
    assert (tmp_path / "m" / "model.safetensors").is_file()  # the local folder is kept


def test_non_finite_weights_are_refused(tmp_path):
    model = AstroPT.from_pretrained(V2)
    with torch.no_grad():
        model.blocks[0].mlp.c_fc.weight[0, 0] = float("nan")
    folder = model.save_pretrained(tmp_path / "nan")
    with pytest.raises(PretrainedError, match=r"NaN or Inf.*blocks\.0\.mlp\.c_fc\.weight"):
        AstroPT.from_pretrained(folder)


def test_cli_with_hf_hub_offline_environment(tmp_path):
    """The real environment variables, in a fresh process, as a user sets them."""
    cache = tmp_path / "hub"
    make_cache(cache, V2_REPO, {"astropt/095M/ckpt.pt": V2})
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)}
    proc = subprocess.run([sys.executable, "-m", "astropt", "info", f"{V2_REPO}/astropt/095M"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["model"]["n_layer"] == 2 and info["model"]["modalities"][0]["transpose_hw"] is True
    proc = subprocess.run([sys.executable, "-m", "astropt", "info", "nobody/nothing"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "offline" in proc.stderr or "not in the local" in proc.stderr


def test_published_embedding_equals_reference_on_hf_images(offline_cache):
    """A published v2 model given HF-dataset images ((H, W, 3) uint8) tokenises them as the
    reference did: ``np.array(image).swapaxes(0, 2)``."""
    from astropt.modalities import build_modality

    model = AstroPT.from_pretrained(V2_REPO, subfolder="astropt/095M")
    cfg = model.config.modality("images")
    rng = np.random.default_rng(0)
    hwc = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
    ours = build_modality(cfg).tokenize(torch.from_numpy(hwc.transpose(2, 0, 1).astype(np.float32)))
    plain = build_modality(AstroPT.from_pretrained(V2).config.modality("images"))
    theirs = plain.tokenize(torch.from_numpy(hwc.swapaxes(0, 2).astype(np.float32)))
    np.testing.assert_array_equal(ours.values.numpy(), theirs.values.numpy())
