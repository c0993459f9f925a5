"""Catalogue source: CSV/Parquet of ids, file paths (relative to the table) and labels."""

from __future__ import annotations

import csv

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits

from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import SourceConfig, open_source

rng = np.random.default_rng(4)


def make_catalog(tmp_path, n=4):
    (tmp_path / "cutouts").mkdir()
    rows, images = [], {}
    for i in range(n):
        image = rng.normal(size=(2, 8, 8)).astype(np.float32)
        fits.PrimaryHDU(image).writeto(tmp_path / "cutouts" / f"c{i}.fits")
        images[f"id{i}"] = image
        rows.append({"objid": f"id{i}", "path": f"cutouts/c{i}.fits", "z": 0.1 * i, "type": "S" if i % 2 else "E"})
    with open(tmp_path / "cat.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows, images


def test_csv_catalog_round_trip_with_labels(tmp_path):
    rows, images = make_catalog(tmp_path)
    cfg = SourceConfig(path=str(tmp_path / "cat.csv"), id_column="objid")
    prepare(cfg, tmp_path / "out", rows_per_shard=3, progress=False)
    shards = ShardSet(tmp_path / "out")
    assert shards.ids == [r["objid"] for r in rows]
    for i, obj_id in enumerate(shards.ids):
        record = shards[i]
        np.testing.assert_array_equal(record["image"], images[obj_id])
        assert record["labels"]["z"] == pytest.approx(rows[i]["z"])
        assert record["labels"]["type"] == rows[i]["type"]


def test_parquet_catalog_with_one_path_column_per_band(tmp_path):
    g, r = rng.normal(size=(2, 6, 6)).astype(np.float32)
    fits.PrimaryHDU(g).writeto(tmp_path / "g.fits")
    fits.PrimaryHDU(r).writeto(tmp_path / "r.fits")
    table = pa.table({"id": ["x"], "g_file": ["g.fits"], "r_file": [str(tmp_path / "r.fits")], "mass": [10.5]})
    pq.write_table(table, tmp_path / "cat.parquet")
    cfg = SourceConfig(path=str(tmp_path / "cat.parquet"), columns={"r_file": "image", "g_file": "image"})
    record = open_source(cfg)[0]
    np.testing.assert_array_equal(record["image"], np.stack([r, g]))
    assert record["labels"] == {"mass": 10.5}


def test_catalog_errors_and_skips(tmp_path):
    make_catalog(tmp_path)
    with pytest.raises(DataError, match="missing label column\\(s\\) \\['mass'\\]"):
        open_source(SourceConfig(path=str(tmp_path / "cat.csv"), id_column="objid", label_columns=["mass"]))
    with pytest.raises(DataError, match="no id column 'id'"):
        open_source(SourceConfig(path=str(tmp_path / "cat.csv")))
    (tmp_path / "cutouts" / "c2.fits").unlink()
    cfg = SourceConfig(path=str(tmp_path / "cat.csv"), id_column="objid")
    with pytest.raises(DataError, match="id2.*c2.fits.*missing file"):
        prepare(cfg, tmp_path / "out", progress=False)
    manifest = prepare(cfg, tmp_path / "out2", on_error="skip", progress=False)
    assert manifest.rejects == 1 and "id2" not in ShardSet(tmp_path / "out2").ids
    assert "id2" in (tmp_path / "out2" / "rejects.csv").read_text()
