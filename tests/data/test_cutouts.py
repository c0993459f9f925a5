"""Cutouts by sky position from WCS tiles (synthetic tiles with a known WCS, and the real DSS
plate astropy ships for its WCS tests), and catalogue cross-matching."""

import csv
from pathlib import Path

import astropy
import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from astropt.cli import main
from astropt.data.crossmatch import crossmatch, parse_radius
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import SourceConfig, open_source
from astropt.data.sources.cutouts import stamp_wcs_centre

DSS = Path(astropy.__file__).parent / "wcs" / "tests" / "data" / "dss.14.29.56-62.41.05.fits.gz"
SIZE = 16


def tan_wcs(ra0: float, dec0: float, n: int = 100, scale_arcsec: float = 0.5) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra0, dec0]
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    return w


def write_tile(path: Path, wcs: WCS, sources: list[tuple[float, float]], n: int = 100, value: float = 100.0) -> None:
    """A tile with a faint gradient and a bright pixel at each (ra, dec) it contains."""
    data = np.add.outer(np.arange(n), np.arange(n)).astype(np.float32) * 0.01
    for ra, dec in sources:
        x, y = wcs.world_to_pixel_values(ra, dec)
        i, j = int(np.round(y)), int(np.round(x))
        if 0 <= i < n and 0 <= j < n:
            data[i, j] = value
    fits.PrimaryHDU(data, header=wcs.to_header()).writeto(path)


@pytest.fixture
def survey(tmp_path):
    """Two adjacent tiles in g and r (only tile A in r), and a catalogue of 5 positions."""
    a, b = tan_wcs(150.0, 2.0), tan_wcs(150.0 - 50 / 3600, 2.0)  # b: the next 50" (100 px) west
    pos = {
        "in_a": a.pixel_to_world_values(30.3, 40.7),
        "in_b": b.pixel_to_world_values(60.0, 50.0),
        "edge_a": a.pixel_to_world_values(3.0, 50.0),  # inside A's footprint, too near its edge
        "off": (151.0, 3.0),
        "in_a2": a.pixel_to_world_values(70.0, 70.0),
    }
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    points = [tuple(map(float, p)) for p in pos.values()]
    write_tile(tiles / "A_g.fits", a, points)
    write_tile(tiles / "B_g.fits", b, points)
    write_tile(tiles / "A_r.fits", a, points, value=50.0)
    with (tmp_path / "cat.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "ra", "dec", "redshift"])
        for k, (name, (ra, dec)) in enumerate(pos.items()):
            w.writerow([name, float(ra), float(dec), 0.1 * k])
    return tmp_path, pos


def test_stamps_are_centred_on_the_catalogue_position(survey):
    folder, pos = survey
    cfg = SourceConfig(path=str(folder / "cat.csv"), images=str(folder / "tiles" / "*_{band}.fits"),
                       bands=["g"], image_size=SIZE)
    src = open_source(cfg)
    for index, name in enumerate(pos):
        if name in ("edge_a", "off"):
            continue
        rec = src.read(index)
        stamp = rec["image"]
        assert stamp.shape == (1, SIZE, SIZE)
        # the position is within half a pixel of the stamp's centre, and the object's pixel
        # (the bright one) is where the stamp's own WCS puts the position
        x, y = stamp_wcs_centre(src, index)
        centre = (SIZE - 1) / 2
        assert abs(x - centre) <= 0.5 and abs(y - centre) <= 0.5
        assert np.unravel_index(np.argmax(stamp[0]), stamp[0].shape) == (round(y), round(x))
        assert rec["labels"]["redshift"] == pytest.approx(0.1 * index)


def test_edges_footprints_and_missing_bands_are_rejected_with_reasons(survey, tmp_path):
    folder, _ = survey
    out = tmp_path / "prepared"
    rc = main(["data", "cutouts", str(folder / "cat.csv"), "--images", str(folder / "tiles" / "*_{band}.fits"),
               "--bands", "g", "r", "--size", str(SIZE), "--out", str(out), "--no-progress"])
    assert rc == 0
    shards = ShardSet(out)
    assert sorted(shards.ids) == ["in_a", "in_a2"]  # in_b has no r tile
    assert shards[0]["image"].shape == (2, SIZE, SIZE)
    rejects = {row["id"]: row["reason"] for row in csv.DictReader((out / "rejects.csv").open())}
    assert "too near the edge" in rejects["edge_a"]
    assert "outside every g tile" in rejects["off"]
    assert "outside every r tile" in rejects["in_b"]


@pytest.mark.filterwarnings("ignore::astropy.wcs.FITSFixedWarning", "ignore::astropy.io.fits.verify.VerifyWarning")
def test_real_dss_plate(tmp_path):
    """astropy's DSS test plate (a real photographic-plate WCS)."""
    with fits.open(DSS) as hdul:
        data = hdul[0].data.astype(np.float32)
        wcs = WCS(hdul[0].header)
    tile = tmp_path / "dss.fits"
    fits.PrimaryHDU(data, header=wcs.to_header()).writeto(tile)
    pixels = [(50.0, 50.0), (20.2, 70.6), (80.0, 30.0)]
    world = [wcs.pixel_to_world_values(x, y) for x, y in pixels]
    with (tmp_path / "cat.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "ra", "dec"])
        for k, (ra, dec) in enumerate(world):
            w.writerow([f"o{k}", float(ra), float(dec)])
    src = open_source(SourceConfig(path=str(tmp_path / "cat.csv"), images=str(tile), image_size=SIZE))
    for k, (x, y) in enumerate(pixels):
        stamp = src.read(k)["image"][0]
        cx, cy = stamp_wcs_centre(src, k)
        assert abs(cx - (SIZE - 1) / 2) <= 0.5 and abs(cy - (SIZE - 1) / 2) <= 0.5
        # the stamp's pixel at the position is the plate's pixel there
        assert stamp[round(cy), round(cx)] == data[round(y), round(x)]


def test_missing_columns_and_tiles_are_named(survey):
    folder, _ = survey
    with pytest.raises(DataError, match="no column 'RA'"):
        open_source(SourceConfig(path=str(folder / "cat.csv"), images=str(folder / "tiles" / "*_{band}.fits"),
                                 bands=["g"], image_size=SIZE, ra_column="RA"))
    with pytest.raises(DataError, match="no tile matches"):
        open_source(SourceConfig(path=str(folder / "cat.csv"), images=str(folder / "tiles" / "*_{band}.fits"),
                                 bands=["z"], image_size=SIZE))


def test_crossmatch_reports_unmatched_and_multiple(tmp_path):
    rng = np.random.default_rng(0)
    ra, dec = 150 + rng.uniform(0, 0.1, 50), 2 + rng.uniform(0, 0.1, 50)
    with (tmp_path / "a.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "ra", "dec"])
        for k in range(50):
            w.writerow([k, ra[k], dec[k]])
    with (tmp_path / "b.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["objid", "ra", "dec", "z_spec"])
        for k in range(40):  # 40 matched, offsets of 0.3"
            w.writerow([100 + k, ra[k] + 0.3 / 3600, dec[k], 0.01 * k])
        w.writerow([999, ra[0] - 0.5 / 3600, dec[0], 9.0])  # a second one near object 0
    report = crossmatch(tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "m.parquet", radius="1arcsec")
    assert report["matched"] == 40 and report["unmatched"] == 10
    assert report["left_with_several_within_radius"] == 1
    table = pq.read_table(tmp_path / "m.parquet").to_pydict()
    assert table["right_objid"][:3] == [100, 101, 102] and table["n_within"][0] == 2
    assert np.allclose(table["sep_arcsec"], 0.3, atol=0.01)
    assert parse_radius("0.5arcsec").value == pytest.approx(0.5)
    with pytest.raises(DataError, match="not an angle"):
        parse_radius("one arcsec")
