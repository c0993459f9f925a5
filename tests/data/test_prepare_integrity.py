"""prepare(): the folder's schema never comes from whichever file sorts first, a resume
redoes what changed in its inputs, label types follow the majority, manifests are checked."""

from __future__ import annotations

import csv
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astropt.cli import main
from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import SourceConfig

SIZE, BANDS = 8, 2


def good_image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(BANDS, SIZE, SIZE)).astype(np.float32)


# Malformed objects: each a different way to be wrong, all readable by astropy or not at all.
BAD_WRITERS = {
    "one_d": lambda p: fits.PrimaryHDU(np.arange(10, dtype=np.float32)).writeto(p),
    "wrong_bands": lambda p: fits.PrimaryHDU(np.zeros((3, SIZE, SIZE), np.float32)).writeto(p),
    "wrong_size": lambda p: fits.PrimaryHDU(np.zeros((BANDS, SIZE + 4, SIZE + 4), np.float32)).writeto(p),
    "nan": lambda p: fits.PrimaryHDU(np.full((BANDS, SIZE, SIZE), np.nan, np.float32)).writeto(p),
    "garbage": lambda p: p.write_bytes(b"SIMPLE  =                    T" + b"\0" * 50),
}


def rejects_of(out: Path) -> dict[str, str]:
    with open(out / "rejects.csv") as fh:
        return {row["id"]: row["reason"] for row in csv.DictReader(fh)}


def test_a_malformed_file_that_sorts_first_does_not_fix_the_schema(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    BAD_WRITERS["one_d"](src / "a000.fits")
    for i in range(5):
        fits.PrimaryHDU(good_image(i)).writeto(src / f"g{i}.fits")
    manifest = prepare(SourceConfig(path=str(src)), tmp_path / "out", on_error="skip", progress=False)
    assert manifest.n_objects == 5 and manifest.arrays["image"].shape == [BANDS, SIZE, SIZE]
    assert list(rejects_of(tmp_path / "out")) == ["a000"]


def test_explicit_image_size_and_bands_win_over_a_majority(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(3):
        BAD_WRITERS["one_d"](src / f"a{i}.fits")  # a majority of 1-D files
    for i in range(2):
        fits.PrimaryHDU(good_image(i)).writeto(src / f"g{i}.fits")
    cfg = SourceConfig(path=str(src), image_size=SIZE, n_bands=BANDS)
    manifest = prepare(cfg, tmp_path / "out", on_error="skip", progress=False)
    assert manifest.n_objects == 2 and manifest.arrays["image"].shape == [BANDS, SIZE, SIZE]
    assert sorted(rejects_of(tmp_path / "out")) == ["a0", "a1", "a2"]


def test_a_tie_between_shapes_is_an_error_asking_for_the_shape(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    BAD_WRITERS["wrong_bands"](src / "a.fits")
    fits.PrimaryHDU(good_image(0)).writeto(src / "b.fits")
    with pytest.raises(DataError, match="--n-bands"):
        prepare(SourceConfig(path=str(src)), tmp_path / "out", on_error="skip", progress=False)


FUZZ = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@given(
    good=st.integers(min_value=1, max_value=5),
    bad=st.lists(st.sampled_from(sorted(BAD_WRITERS)), max_size=4),
    names=st.randoms(use_true_random=False),
    explicit=st.booleans(),
)
@FUZZ
def test_fuzz_prepare_keeps_every_good_object_and_names_every_bad_one(good, bad, names, explicit):
    if not explicit and len(bad) >= good:  # without the shape given, good objects must be the majority
        bad = bad[: good - 1]
    kinds = ["good"] * good + bad
    ids = [f"o{n:03d}" for n in names.sample(range(1000), len(kinds))]  # random order on disk
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        for k, (obj_id, kind) in enumerate(zip(ids, kinds, strict=True)):
            path = src / f"{obj_id}.fits"
            fits.PrimaryHDU(good_image(k)).writeto(path) if kind == "good" else BAD_WRITERS[kind](path)
        cfg = SourceConfig(path=str(src), image_size=SIZE if explicit else 0, n_bands=BANDS if explicit else 0)
        prepare(cfg, out, rows_per_shard=3, on_error="skip", progress=False)
        expected_good = sorted(i for i, kind in zip(ids, kinds, strict=True) if kind == "good")
        expected_bad = {i for i, kind in zip(ids, kinds, strict=True) if kind != "good"}
        if explicit:  # a larger image is centre-cropped to the given size: a good object then
            moved = {i for i, kind in zip(ids, kinds, strict=True) if kind == "wrong_size"}
            expected_good, expected_bad = sorted({*expected_good, *moved}), expected_bad - moved
        assert sorted(ShardSet(out).ids) == expected_good
        assert set(rejects_of(out)) == expected_bad


# ----------------------------------------------------------------------------- resume


def write_folder(src: Path, ids: list[str]) -> None:
    src.mkdir(exist_ok=True)
    for k, obj_id in enumerate(ids):
        fits.PrimaryHDU(good_image(k)).writeto(src / f"{obj_id}.fits", overwrite=True)


def test_resume_after_files_were_added_keeps_every_id_once(tmp_path):
    src = tmp_path / "src"
    write_folder(src, ["b", "c", "d", "e"])
    cfg = SourceConfig(path=str(src))
    prepare(cfg, tmp_path / "out", rows_per_shard=2, progress=False)
    write_folder(src, ["a"])  # sorts first: every later object moves one position
    prepare(cfg, tmp_path / "out", rows_per_shard=2, progress=False)
    assert ShardSet(tmp_path / "out").ids == ["a", "b", "c", "d", "e"]


def test_resume_after_a_rejected_file_was_fixed_or_deleted_forgets_its_reject(tmp_path):
    src = tmp_path / "src"
    write_folder(src, ["a", "b", "c", "d"])
    BAD_WRITERS["nan"](src / "x.fits")
    BAD_WRITERS["garbage"](src / "y.fits")
    cfg = SourceConfig(path=str(src))
    prepare(cfg, tmp_path / "out", rows_per_shard=2, on_error="skip", progress=False)
    assert set(rejects_of(tmp_path / "out")) == {"x", "y"}
    fits.PrimaryHDU(good_image(9)).writeto(src / "x.fits", overwrite=True)  # fixed
    os.utime(src / "x.fits", ns=(1, 1))  # even with an old modification time (the size differs)
    (src / "y.fits").unlink()  # deleted
    manifest = prepare(cfg, tmp_path / "out", rows_per_shard=2, on_error="skip", progress=False)
    assert rejects_of(tmp_path / "out") == {} and manifest.rejects == 0
    assert ShardSet(tmp_path / "out").ids == ["a", "b", "c", "d", "x"]


def test_rerun_with_raise_after_skip_raises_for_the_rejected_object(tmp_path):
    src = tmp_path / "src"
    write_folder(src, ["a", "b", "c"])
    BAD_WRITERS["garbage"](src / "b.fits")
    cfg = SourceConfig(path=str(src))
    prepare(cfg, tmp_path / "out", rows_per_shard=2, on_error="skip", progress=False)
    with pytest.raises(DataError, match="'b'"):
        prepare(cfg, tmp_path / "out", rows_per_shard=2, on_error="raise", progress=False)


# ----------------------------------------------------------------------------- labels


def write_catalog(tmp_path: Path, redshifts: list[str]) -> Path:
    write_folder(tmp_path / "img", [f"g{i}" for i in range(len(redshifts))])
    rows = ["id,path,z,kind"] + [
        f"o{i},{tmp_path / 'img' / f'g{i}.fits'},{z},{'spiral' if i % 2 else 'elliptical'}"
        for i, z in enumerate(redshifts)
    ]
    (tmp_path / "cat.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "cat.csv"


def test_a_numeric_label_with_one_bad_cell_stays_numeric_and_the_cell_is_reported(tmp_path):
    cat = write_catalog(tmp_path, ["0.1", "0.2", "abc", "0.4", "0.5"])
    manifest = prepare(SourceConfig(path=str(cat)), tmp_path / "out", on_error="skip", progress=False)
    assert manifest.labels["z"] == "float64" and manifest.labels["kind"] == "string"
    z = ShardSet(tmp_path / "out").labels()["z"]
    np.testing.assert_allclose(z, [0.1, 0.2, np.nan, 0.4, 0.5])
    with open(tmp_path / "out" / "label_issues.csv") as fh:
        issues = list(csv.DictReader(fh))
    assert [(r["id"], r["label"], r["value"]) for r in issues] == [("o2", "z", "abc")]


def test_a_bad_label_cell_with_raise_names_the_object_and_label(tmp_path):
    cat = write_catalog(tmp_path, ["0.1", "0.2", "abc", "0.4", "0.5"])
    with pytest.raises(DataError, match=r"'o2'.*'z'"):
        prepare(SourceConfig(path=str(cat)), tmp_path / "out", on_error="raise", progress=False)


def test_a_declared_label_type_wins(tmp_path):
    cat = write_catalog(tmp_path, ["1", "2", "3", "x", "y"])
    cfg = SourceConfig(path=str(cat), label_types={"z": "string"})
    manifest = prepare(cfg, tmp_path / "out", progress=False)
    assert manifest.labels["z"] == "string"


# ----------------------------------------------------------------------------- manifests


@pytest.fixture
def prepared(tmp_path) -> Path:
    write_folder(tmp_path / "src", ["a", "b", "c", "d", "e"])
    prepare(SourceConfig(path=str(tmp_path / "src")), tmp_path / "out", rows_per_shard=2, progress=False)
    return tmp_path / "out"


def test_a_null_manifest_is_a_named_error(prepared, capsys):
    (prepared / "manifest.json").write_text("null")
    assert main(["data", "info", str(prepared)]) == 2
    assert "manifest.json" in capsys.readouterr().err


def test_a_manifest_with_missing_keys_names_them(prepared, capsys):
    data = json.loads((prepared / "manifest.json").read_text())
    del data["arrays"], data["shards"]
    (prepared / "manifest.json").write_text(json.dumps(data))
    assert main(["data", "info", str(prepared)]) == 2
    err = capsys.readouterr().err
    assert "arrays" in err and "shards" in err and "missing" in err


def test_manifest_counts_are_checked_against_the_shards(prepared):
    data = json.loads((prepared / "manifest.json").read_text())
    data["shards"][0]["rows"] = 5
    (prepared / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="n_objects=5 but its shard entries hold 8"):
        ShardSet(prepared)
    data["n_objects"] = 8  # consistent with itself, not with the shard files
    (prepared / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match="part-00000.arrow: has 2 rows but the manifest lists 5"):
        ShardSet(prepared)


def test_a_shard_from_another_folder_is_named(prepared, tmp_path):
    other = tmp_path / "other"
    write_folder(other, ["p", "q", "r", "s", "t"])
    prepare(SourceConfig(path=str(other)), tmp_path / "out2", rows_per_shard=2, progress=False)
    shard = prepared / "shards" / "part-00001.arrow"
    shard.write_bytes((tmp_path / "out2" / "shards" / "part-00001.arrow").read_bytes())
    with pytest.raises(DataError, match="part-00001.arrow"):
        ShardSet(prepared)


def test_a_full_disk_is_a_one_line_error_naming_the_file(tmp_path, monkeypatch, capsys):
    import errno

    from astropt import atomic

    write_folder(tmp_path / "src", ["a", "b", "c"])

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    assert main(["data", "prepare", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "disk is full" in err and str(tmp_path / "out") in err and "Traceback" not in err


def test_probe_refuses_a_numeric_label_stored_as_text(tmp_path):
    from astropt.tasks.probe import probe_target

    rng = np.random.default_rng(0)
    z = rng.uniform(0, 1, 60)
    text = np.array([f"{v:.4f}" for v in z], dtype=object)
    text[7] = "abc"  # a folder prepared when one bad cell made the column text
    x = np.stack([z, rng.normal(size=60)], axis=1)
    with pytest.raises(DataError, match=r"'z' is stored as text but 59 of its 60 values are numbers"):
        probe_target(x, text, "z", uncertainty=False)
