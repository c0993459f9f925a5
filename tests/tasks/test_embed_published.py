"""The legacy-DESI path end to end: a published hub model + a Hugging Face dataset of JPEG
stamps -> embeddings Parquet in one command, equal to what the reference computes."""

import sys
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import constants

from astropt.cli import main
from astropt.tasks.embed import load_embeddings

TESTS = Path(__file__).parent.parent
sys.path.insert(0, str(TESTS / "model"))
from hubfake import make_cache  # noqa: E402

FIXTURES = TESTS / "fixtures" / "reference"


@pytest.fixture
def galaxies(tmp_path):
    """An HF ``save_to_disk`` dataset shaped like ``Smith42/galaxies``: PIL images in the
    ``image_crop`` column (row 0: the reference fixture's image), plus a redshift column."""
    import datasets
    from PIL import Image

    expected = np.load(FIXTURES / "expected_v2.npz")
    rng = np.random.default_rng(1)
    arrays = [expected["jpeg_like"]] + [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    ds = datasets.Dataset.from_dict(
        {"dr8_id": [f"g{i}" for i in range(5)], "image_crop": [Image.fromarray(a) for a in arrays],
         "redshift": [0.1 * i for i in range(5)]},
        features=datasets.Features({"dr8_id": datasets.Value("string"), "image_crop": datasets.Image(),
                                    "redshift": datasets.Value("float32")}),
    )
    ds.save_to_disk(str(tmp_path / "galaxies"))
    return tmp_path / "galaxies", expected


def test_hub_model_and_hf_dataset_to_embeddings_in_one_command(galaxies, tmp_path, monkeypatch):
    folder, expected = galaxies
    make_cache(tmp_path / "hub", "Smith42/astroPT_v2.0", {"astropt/095M/ckpt.pt": FIXTURES / "ckpt_v2_tiny.pt"})
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    out = tmp_path / "emb.parquet"
    rc = main(["embed", "Smith42/astroPT_v2.0/astropt/095M", str(folder), "--out", str(out),
               "--dtype", "float32", "--device", "cpu"])
    assert rc == 0
    emb = load_embeddings(out)
    assert emb.ids == [f"g{i}" for i in range(5)] and "redshift" in emb.labels
    # row 0 is the reference's own image: the reference's training-pipeline embedding
    np.testing.assert_allclose(emb.matrix()[0], expected["jpeg_like_embedding"], atol=1e-5, rtol=0)
    # the source was prepared beside the output, and a rerun reuses everything
    assert (tmp_path / "emb.parquet.data" / "manifest.json").is_file()
    assert main(["embed", "Smith42/astroPT_v2.0/astropt/095M", str(folder), "--out", str(out),
                 "--dtype", "float32", "--device", "cpu"]) == 0
    np.testing.assert_array_equal(load_embeddings(out).matrix(), emb.matrix())
