"""HDF5 and NumPy sources: rows, ids, labels, layouts and their errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import ObjectError, SourceConfig, open_source

rng = np.random.default_rng(3)


def make_h5(path, n=5, hwc=False):
    images = rng.normal(size=(n, 2, 8, 8)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["images"] = images.transpose(0, 2, 3, 1) if hwc else images
        f["id"] = np.array([f"obj{i}".encode() for i in range(n)])
        f["redshift"] = rng.uniform(0, 1, size=n)
        f["kind"] = np.array([b"spiral", b"elliptical"] * (n // 2) + [b"spiral"] * (n % 2))
    return images


def test_hdf5_round_trip_with_ids_and_labels(tmp_path):
    images = make_h5(tmp_path / "a.h5")
    manifest = prepare(SourceConfig(path=str(tmp_path / "a.h5")), tmp_path / "out", rows_per_shard=2, progress=False)
    assert manifest.labels == {"redshift": "float64", "kind": "string"}
    shards = ShardSet(tmp_path / "out")
    assert shards.ids == [f"obj{i}" for i in range(5)]
    np.testing.assert_array_equal(shards.get_batch(range(5))["image"], images)
    with h5py.File(tmp_path / "a.h5") as f:
        np.testing.assert_array_equal(shards.labels()["redshift"], f["redshift"][:])
    assert shards[1]["labels"]["kind"] == "elliptical"


def test_hdf5_channels_last(tmp_path):
    images = make_h5(tmp_path / "b.h5", hwc=True)
    record = open_source(SourceConfig(path=str(tmp_path / "b.h5"), layout="hwc"))[2]
    np.testing.assert_array_equal(record["image"], images[2])


def test_hdf5_errors(tmp_path):
    make_h5(tmp_path / "a.h5")
    with pytest.raises(DataError, match="no label dataset \\['mass'\\]"):
        open_source(SourceConfig(path=str(tmp_path / "a.h5"), label_columns=["mass"]))
    with pytest.raises(DataError, match="no dataset \\['pix'\\]"):
        open_source(SourceConfig(path=str(tmp_path / "a.h5"), columns={"pix": "image"}))
    with h5py.File(tmp_path / "a.h5", "a") as f:
        f["images"][3, 0, 0, 0] = np.nan
    with pytest.raises(ObjectError, match="obj3.*1 NaN"):
        open_source(SourceConfig(path=str(tmp_path / "a.h5")))[3]


def test_npy_npz_and_npy_folder(tmp_path):
    images = rng.normal(size=(4, 1, 6, 6)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    source = open_source(SourceConfig(path=str(tmp_path / "x.npy")))
    assert len(source) == 4 and source[3]["id"] == "3"
    np.testing.assert_array_equal(source[3]["image"], images[3])

    np.savez(tmp_path / "y.npz", images=images, id=np.array(["a", "b", "c", "d"]), mass=np.arange(4.0))
    source = open_source(SourceConfig(path=str(tmp_path / "y.npz")))
    assert source[2]["id"] == "c" and source[2]["labels"] == {"mass": 2.0}
    with pytest.raises(DataError, match="no label array"):
        open_source(SourceConfig(path=str(tmp_path / "y.npz"), label_columns=["z"]))

    folder = tmp_path / "folder"
    folder.mkdir()
    for i in range(3):
        np.save(folder / f"o{i}.npy", images[i])
    source = open_source(SourceConfig(path=str(folder)))
    np.testing.assert_array_equal(source[1]["image"], images[1])


def test_limit(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 1, 4, 4), np.float32))
    assert len(open_source(SourceConfig(path=str(tmp_path / "x.npy"), limit=3))) == 3
