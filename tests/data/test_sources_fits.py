"""FITS source: cubes, 2-D images, band files, extensions, scaling, spectra, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits

from astropt.data.prepare import prepare
from astropt.data.shards import DataError, ShardSet
from astropt.data.sources import ObjectError, SourceConfig, open_source

rng = np.random.default_rng(1)


def test_cube_and_2d_images(tmp_path):
    cube = rng.normal(size=(3, 10, 10)).astype(np.float32)
    fits.PrimaryHDU(cube).writeto(tmp_path / "a.fits")
    source = open_source(SourceConfig(path=str(tmp_path)))
    assert len(source) == 1 and source[0]["id"] == "a"
    np.testing.assert_array_equal(source[0]["image"], cube)

    single = tmp_path / "grey"
    single.mkdir()
    plane = rng.normal(size=(10, 8)).astype(np.float32)
    fits.PrimaryHDU(plane).writeto(single / "b.fits.gz")
    record = open_source(SourceConfig(path=str(single)))[0]
    assert record["id"] == "b"
    np.testing.assert_array_equal(record["image"], plane[None])


def test_big_endian_and_bscale_bzero_are_honoured(tmp_path):
    values = np.arange(64, dtype=np.float64).reshape(8, 8) * 0.5 - 3.0
    hdu = fits.PrimaryHDU(values.astype(">f8"))
    hdu.scale("int16", bscale=0.5, bzero=-3.0)
    hdu.writeto(tmp_path / "scaled.fits")
    with fits.open(tmp_path / "scaled.fits", do_not_scale_image_data=True) as raw:
        assert raw[0].data.dtype.byteorder == ">" and raw[0].header["BSCALE"] == 0.5
    image = open_source(SourceConfig(path=str(tmp_path)))[0]["image"]
    assert image.dtype == np.float32 and image.dtype.byteorder in ("=", "<")
    np.testing.assert_allclose(image[0], values, atol=1e-6)


def test_extensions_by_name_index_and_stacked(tmp_path):
    g, r = (rng.normal(size=(6, 6)).astype(np.float32) for _ in range(2))
    hdul = fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(g, name="G"), fits.ImageHDU(r, name="R")])
    hdul.writeto(tmp_path / "mef.fits")
    first = open_source(SourceConfig(path=str(tmp_path)))[0]["image"]  # first HDU with data
    np.testing.assert_array_equal(first, g[None])
    by_name = open_source(SourceConfig(path=str(tmp_path), hdus=["R"]))[0]["image"]
    np.testing.assert_array_equal(by_name, r[None])
    by_index = open_source(SourceConfig(path=str(tmp_path), hdus=["2"]))[0]["image"]
    np.testing.assert_array_equal(by_index, r[None])
    stacked = open_source(SourceConfig(path=str(tmp_path), hdus=["R", "G"]))[0]["image"]
    np.testing.assert_array_equal(stacked, np.stack([r, g]))
    with pytest.raises(ObjectError, match="no HDU 'Z'"):
        open_source(SourceConfig(path=str(tmp_path), hdus=["Z"]))[0]


def test_one_file_per_band(tmp_path):
    bands = {b: rng.normal(size=(2, 8, 8)).astype(np.float32) for b in "gri"}
    for i in range(2):
        for b, data in bands.items():
            fits.PrimaryHDU(data[i]).writeto(tmp_path / f"obj{i}_{b}.fits")
    cfg = SourceConfig(path=str(tmp_path), kind="fits", band_pattern="{id}_{band}.fits", bands=["i", "g"])
    source = open_source(cfg)
    assert [source[k]["id"] for k in range(len(source))] == ["obj0", "obj1"]
    np.testing.assert_array_equal(source[1]["image"], np.stack([bands["i"][1], bands["g"][1]]))
    (tmp_path / "obj1_g.fits").unlink()
    with pytest.raises(ObjectError, match="obj1_g.fits"):
        source[1]


def test_spectrum_from_binary_table(tmp_path):
    loglam = np.linspace(3.6, 3.9, 50)
    flux, ivar = rng.normal(size=50), rng.uniform(1, 2, size=50)
    table = fits.BinTableHDU.from_columns(
        [fits.Column("flux", "E", array=flux), fits.Column("loglam", "E", array=loglam), fits.Column("ivar", "E", array=ivar)]
    )
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(tmp_path / "spec-1.fits")
    cfg = SourceConfig(path=str(tmp_path), field="spectrum", wavelength_column="loglam")
    record = open_source(cfg)[0]
    np.testing.assert_allclose(record["spectrum"], flux, rtol=1e-6)
    np.testing.assert_allclose(record["spectrum_wavelength"], 10**loglam, rtol=1e-5)
    np.testing.assert_allclose(record["spectrum_ivar"], ivar, rtol=1e-6)
    manifest = prepare(cfg, tmp_path / "out", progress=False)
    assert manifest.arrays["spectrum"].variable
    np.testing.assert_allclose(ShardSet(tmp_path / "out")[0]["spectrum"], flux, rtol=1e-6)
    with pytest.raises(ObjectError, match="no flux column 'fluxx'"):
        open_source(SourceConfig(path=str(tmp_path), flux_column="fluxx", wavelength_column="loglam"))[0]


@pytest.mark.parametrize(
    ("writer", "message"),
    [
        (lambda p: fits.PrimaryHDU().writeto(p), "no HDU holds data"),
        (lambda p: fits.PrimaryHDU(np.full((4, 4), np.inf, np.float32)).writeto(p), "16 Inf"),
        (lambda p: p.write_bytes(b"not a fits file at all"), "FITS"),
        (lambda p: fits.PrimaryHDU(np.zeros((4, 2, 4, 4), np.float32)).writeto(p), "2-D .* or 3-D"),
    ],
    ids=["empty", "inf", "garbage", "4d"],
)
def test_bad_files_name_object_file_and_reason(tmp_path, writer, message):
    writer(tmp_path / "bad.fits")
    with pytest.raises(ObjectError, match=message) as info:
        open_source(SourceConfig(path=str(tmp_path)))[0]
    assert info.value.obj_id == "bad" and info.value.file.endswith("bad.fits")


def test_truncated_file_is_an_error(tmp_path):
    fits.PrimaryHDU(np.ones((64, 64), np.float32)).writeto(tmp_path / "t.fits")
    blob = (tmp_path / "t.fits").read_bytes()
    (tmp_path / "t.fits").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ObjectError, match="t.fits"):
        open_source(SourceConfig(path=str(tmp_path)))[0]


def test_wrong_band_count_and_empty_folder(tmp_path):
    fits.PrimaryHDU(np.ones((2, 4, 4), np.float32)).writeto(tmp_path / "x.fits")
    with pytest.raises(ObjectError, match="2 bands, expected 4"):
        open_source(SourceConfig(path=str(tmp_path), n_bands=4))[0]
    with pytest.raises(ObjectError, match=r"channels \[3\]"):
        open_source(SourceConfig(path=str(tmp_path), channels=[3]))[0]
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no readable files"):
        open_source(SourceConfig(path=str(tmp_path / "empty"), kind="fits"))
