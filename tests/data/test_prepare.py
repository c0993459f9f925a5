"""prepare(): source -> shards round trip, resume, rejects, atomicity, parallel writers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import ObjectError, SourceConfig


def write_fits_folder(folder: Path, n: int = 10, bands: int = 2, size: int = 12, seed: int = 0) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        image = rng.normal(size=(bands, size, size)).astype(np.float32)
        fits.PrimaryHDU(image).writeto(folder / f"g{i:03d}.fits")
        images[f"g{i:03d}"] = image
    return images


def test_fits_folder_round_trip_through_shards_and_loader(tmp_path):
    images = write_fits_folder(tmp_path / "src", n=7)
    manifest = prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", rows_per_shard=3, progress=False)
    assert manifest.n_objects == 7 and len(manifest.shards) == 3
    assert manifest.arrays["image"].shape == [2, 12, 12]
    shards = ShardSet(tmp_path / "out")
    assert shards.ids == sorted(images)
    for i, obj_id in enumerate(shards.ids):
        np.testing.assert_array_equal(shards[i]["image"], images[obj_id])
    stacked = np.stack([images[k] for k in sorted(images)])
    np.testing.assert_allclose(manifest.band_stats["image"]["mean"], stacked.mean(axis=(0, 2, 3)), rtol=1e-5, atol=1e-6)

    from astropt.data.loader import ShardDataset

    dataset = ShardDataset(tmp_path / "out", split="all")
    for record in dataset.__getitems__(list(range(len(dataset)))):
        np.testing.assert_array_equal(record["image"], images[record["id"]])


def test_ddp_sharding_covers_every_id_once(tmp_path):
    write_fits_folder(tmp_path / "src", n=8)
    prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", rows_per_shard=3, progress=False)
    from astropt.data.loader import ResumableDistributedSampler, ShardDataset

    dataset = ShardDataset(tmp_path / "out", split="all")
    seen = []
    for rank in range(2):
        sampler = ResumableDistributedSampler(len(dataset), world_size=2, rank=rank, seed=3)
        seen += [dataset[key]["id"] for key in sampler]
    assert sorted(seen) == sorted(dataset.ids)


def test_raise_names_object_file_and_reason_and_leaves_no_partial_shard(tmp_path):
    write_fits_folder(tmp_path / "src", n=6)
    (tmp_path / "src" / "g004.fits").write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    with pytest.raises(DataError) as info:
        prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", rows_per_shard=3, progress=False)
    assert "g004" in str(info.value) and "g004.fits" in str(info.value)
    assert isinstance(info.value, ObjectError) and info.value.obj_id == "g004"
    shard_files = sorted(p.name for p in (tmp_path / "out" / "shards").iterdir())
    assert shard_files == ["part-00000.arrow"]  # the first shard is whole, the bad one absent
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_skip_writes_rejects_and_counts_them(tmp_path):
    write_fits_folder(tmp_path / "src", n=6)
    bad = fits.PrimaryHDU(np.full((2, 12, 12), np.nan, dtype=np.float32))
    bad.writeto(tmp_path / "src" / "g002.fits", overwrite=True)
    fits.PrimaryHDU(np.zeros((3, 12, 12), np.float32)).writeto(tmp_path / "src" / "g005.fits", overwrite=True)
    manifest = prepare(
        SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", rows_per_shard=4, on_error="skip", progress=False
    )
    assert manifest.n_objects == 4 and manifest.rejects == 2
    with open(tmp_path / "out" / "rejects.csv") as fh:
        rows = {r["id"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"g002", "g005"}
    assert "NaN" in rows["g002"]["reason"] and rows["g002"]["file"].endswith("g002.fits")
    assert "shape [3, 12, 12]" in rows["g005"]["reason"]
    assert "g002" not in ShardSet(tmp_path / "out").ids


def test_resume_keeps_finished_shards_and_gives_same_result(tmp_path):
    write_fits_folder(tmp_path / "src", n=9)
    cfg = SourceConfig(path=str(tmp_path / "src"))
    prepare(cfg, tmp_path / "full", rows_per_shard=3, progress=False)
    prepare(cfg, tmp_path / "out", rows_per_shard=3, progress=False)
    # Simulate a crash after the first shard: later shards and the manifest are missing.
    for name in ("part-00001.arrow", "part-00002.arrow"):
        (tmp_path / "out" / "shards" / name).unlink()
    (tmp_path / "out" / "manifest.json").unlink()
    first = tmp_path / "out" / "shards" / "part-00000.arrow"
    mtime = first.stat().st_mtime_ns
    prepare(cfg, tmp_path / "out", rows_per_shard=3, progress=False)
    assert first.stat().st_mtime_ns == mtime
    a, b = ShardSet(tmp_path / "full"), ShardSet(tmp_path / "out")
    assert a.ids == b.ids
    np.testing.assert_array_equal(a.get_batch(range(9))["image"], b.get_batch(range(9))["image"])


def test_other_config_in_same_folder_is_refused(tmp_path):
    write_fits_folder(tmp_path / "src", n=3)
    prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", progress=False)
    with pytest.raises(DataError, match="different source or config"):
        prepare(SourceConfig(path=str(tmp_path / "src"), image_size=8), tmp_path / "out", progress=False)
    manifest = prepare(SourceConfig(path=str(tmp_path / "src"), image_size=8), tmp_path / "out", overwrite=True, progress=False)
    assert manifest.arrays["image"].shape == [2, 8, 8]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "junk", progress=False)


def test_manifest_records_source_and_config(tmp_path):
    write_fits_folder(tmp_path / "src", n=3)
    prepare(SourceConfig(path=str(tmp_path / "src"), stretch="asinh"), tmp_path / "out", progress=False)
    data = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert data["source"]["kind"] == "fits" and data["source"]["config"]["stretch"] == "asinh"
    assert data["config_hash"]


@pytest.mark.slow
def test_parallel_workers_give_the_same_shards(tmp_path):
    images = write_fits_folder(tmp_path / "src", n=10)
    cfg = SourceConfig(path=str(tmp_path / "src"))
    prepare(cfg, tmp_path / "one", rows_per_shard=3, progress=False)
    prepare(cfg, tmp_path / "two", rows_per_shard=3, workers=2, progress=False)
    a, b = ShardSet(tmp_path / "one"), ShardSet(tmp_path / "two")
    assert a.ids == b.ids == sorted(images)
    np.testing.assert_array_equal(a.get_batch(range(10))["image"], b.get_batch(range(10))["image"])


def test_cli_prepare_info_show(tmp_path, capsys):
    from PIL import Image

    from astropt.cli import main

    write_fits_folder(tmp_path / "src", n=4, bands=3)
    (tmp_path / "src" / "g003.fits").write_bytes(b"broken")
    out = tmp_path / "out"
    code = main(["data", "prepare", str(tmp_path / "src"), "--out", str(out), "--image-size", "8",
                 "--stretch", "asinh", "--on-error", "skip", "--no-progress"])  # fmt: skip
    assert code == 0 and "3 objects in 1 shards, 1 rejected" in capsys.readouterr().out
    assert ShardSet(out).arrays["image"].shape == [3, 8, 8]
    assert main(["data", "info", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"n_objects": 3' in printed and "image band" in printed
    assert main(["data", "show", str(out), "--ids", "g002", "g000", "--out", str(tmp_path / "grid.png")]) == 0
    with Image.open(tmp_path / "grid.png") as image:
        assert image.format == "PNG" and image.size[0] > 100
    assert main(["data", "show", str(out), "--ids", "nope", "--out", str(tmp_path / "g2.png")]) == 2
    assert "no object(s) ['nope']" in capsys.readouterr().err
    assert main(["data", "prepare", str(tmp_path / "src"), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "g003" in capsys.readouterr().err
