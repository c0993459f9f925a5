"""Hugging Face source: save_to_disk folders, Parquet, the legacy layout, offline hub ids."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import SourceConfig, open_source

sys.path.insert(0, str(Path(__file__).parent.parent / "model"))
from hubfake import make_cache  # noqa: E402

rng = np.random.default_rng(5)


def make_dataset(n=4):
    pixels = [rng.integers(0, 256, size=(8, 6, 3), dtype=np.uint8) for _ in range(n)]
    features = datasets.Features(
        {"image": datasets.Image(), "dr8_id": datasets.Value("string"), "redshift": datasets.Value("float64")}
    )
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(p) for p in pixels], "dr8_id": [f"d{i}" for i in range(n)], "redshift": [0.1 * i for i in range(n)]},
        features=features,
    )
    return ds, pixels


def test_save_to_disk_round_trip(tmp_path):
    ds, pixels = make_dataset()
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "hf"))
    cfg = SourceConfig(path=str(tmp_path / "hf"), id_column="dr8_id")
    manifest = prepare(cfg, tmp_path / "out", rows_per_shard=3, progress=False)
    assert manifest.source["kind"] == "hf" and manifest.labels == {"redshift": "float64"}
    shards = ShardSet(tmp_path / "out")
    assert shards.ids == ["d0", "d1", "d2", "d3"]
    for i in range(4):
        np.testing.assert_array_equal(shards[i]["image"], pixels[i].transpose(2, 0, 1))
        assert shards[i]["labels"]["redshift"] == pytest.approx(0.1 * i)
    with pytest.raises(DataError, match="no split 'test'"):
        open_source(SourceConfig(path=str(tmp_path / "hf"), split="test"))


def test_legacy_swapaxes_matches_the_reference_convention(tmp_path):
    ds, pixels = make_dataset(2)
    ds.save_to_disk(str(tmp_path / "hf"))
    record = open_source(SourceConfig(path=str(tmp_path / "hf"), hwc_to_chw="swapaxes"))[1]
    np.testing.assert_array_equal(record["image"], np.array(pixels[1]).swapaxes(0, 2))


def test_parquet_with_array_columns_and_mapping(tmp_path):
    cubes = rng.normal(size=(3, 2, 4, 4)).astype(np.float32)
    ds = datasets.Dataset.from_dict({"cutout": cubes.tolist(), "mass": [9.0, 10.0, 11.0]})
    ds.to_parquet(str(tmp_path / "d.parquet"))
    cfg = SourceConfig(path=str(tmp_path / "d.parquet"), kind="hf", columns={"cutout": "image"})
    source = open_source(cfg)
    assert len(source) == 3 and source[2]["labels"] == {"mass": 11.0}
    np.testing.assert_array_equal(source[2]["image"], cubes[2])
    with pytest.raises(DataError, match="no column \\['pixels'\\]"):
        open_source(SourceConfig(path=str(tmp_path / "d.parquet"), kind="hf", columns={"pixels": "image"}))


def test_offline_hub_id_fails_fast_with_a_clear_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(DataError, match="offline"):
        open_source(SourceConfig(path="Smith42/galaxies"))
    assert time.perf_counter() - start < 5


def test_offline_hub_id_streams_from_the_local_cache(monkeypatch, tmp_path):
    """A hub dataset downloaded once (laid out in the cache as huggingface_hub lays it) is
    read offline by its id, split by the names of its files, without any network."""
    from huggingface_hub import constants

    ds, pixels = make_dataset(6)
    ds.select(range(4)).to_parquet(str(tmp_path / "a.parquet"))
    ds.select(range(4, 6)).to_parquet(str(tmp_path / "b.parquet"))
    ds.select([0]).to_parquet(str(tmp_path / "c.parquet"))
    files = {"data/train-00000-of-00002.parquet": tmp_path / "a.parquet",
             "data/train-00001-of-00002.parquet": tmp_path / "b.parquet",
             "data/test-00000-of-00001.parquet": tmp_path / "c.parquet"}
    make_cache(tmp_path / "hub", "org/survey", files, repo_type="dataset")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    source = open_source(SourceConfig(path="org/survey", id_column="dr8_id", streaming=True))
    got = [record for _, record in source.results()]
    assert [r["id"] for r in got] == [f"d{i}" for i in range(6)]
    np.testing.assert_array_equal(got[5]["image"], pixels[5].transpose(2, 0, 1))
    test = open_source(SourceConfig(path="org/survey", id_column="dr8_id", split="test", streaming=True))
    assert [r["id"] for _, r in test.results()] == ["d0"]
    with pytest.raises(DataError, match="org/other.*not in the local Hugging Face cache"):
        open_source(SourceConfig(path="org/other", streaming=True))


def test_streamed_dataset_gives_the_same_shards_and_resumes(tmp_path):
    ds, pixels = make_dataset(5)
    ds.save_to_disk(str(tmp_path / "hf"))
    cfg = SourceConfig(path=str(tmp_path / "hf"), id_column="dr8_id", streaming=True)
    source = open_source(cfg)
    assert not source.random_access
    with pytest.raises(TypeError, match="streamed"):
        len(source)
    prepare(cfg, tmp_path / "out", rows_per_shard=2, progress=False)
    (tmp_path / "out" / "shards" / "part-00002.arrow").unlink()  # a crash before the last shard
    (tmp_path / "out" / "manifest.json").unlink()
    manifest = prepare(cfg, tmp_path / "out", rows_per_shard=2, progress=False)
    assert manifest.n_objects == 5 and len(manifest.shards) == 3
    shards = ShardSet(tmp_path / "out")
    assert shards.ids == [f"d{i}" for i in range(5)]
    np.testing.assert_array_equal(shards[4]["image"], pixels[4].transpose(2, 0, 1))
