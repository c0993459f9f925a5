"""JPEG/PNG source: band counts, exact pixel values, layout conventions, broken files."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from astropt.data.sources import ObjectError, SourceConfig, open_source

rng = np.random.default_rng(2)


def test_rgb_png_is_three_bands_with_exact_values(tmp_path):
    pixels = rng.integers(0, 256, size=(10, 7, 3), dtype=np.uint8)  # (H, W, C), not square
    Image.fromarray(pixels).save(tmp_path / "a.png")
    record = open_source(SourceConfig(path=str(tmp_path)))[0]
    assert record["id"] == "a"
    np.testing.assert_array_equal(record["image"], pixels.transpose(2, 0, 1).astype(np.float32))
    legacy = open_source(SourceConfig(path=str(tmp_path), hwc_to_chw="swapaxes"))[0]
    np.testing.assert_array_equal(legacy["image"], np.swapaxes(pixels, 0, 2).astype(np.float32))


def test_tiny_rgb_is_still_channels_last(tmp_path):
    pixels = rng.integers(0, 256, size=(3, 3, 3), dtype=np.uint8)  # layout cannot be guessed
    Image.fromarray(pixels).save(tmp_path / "t.png")
    image = open_source(SourceConfig(path=str(tmp_path)))[0]["image"]
    np.testing.assert_array_equal(image, pixels.transpose(2, 0, 1))


def test_grey_and_rgba(tmp_path):
    grey = rng.integers(0, 256, size=(8, 8), dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "g.png")
    Image.fromarray(rng.integers(0, 256, size=(8, 8, 4), dtype=np.uint8), "RGBA").save(tmp_path / "h.png")
    source = open_source(SourceConfig(path=str(tmp_path)))
    np.testing.assert_array_equal(source[0]["image"], grey[None])
    assert source[1]["image"].shape == (3, 8, 8)


def test_jpeg_crop_and_band_selection(tmp_path):
    Image.fromarray(rng.integers(0, 256, size=(20, 20, 3), dtype=np.uint8)).save(tmp_path / "j.jpg", quality=95)
    record = open_source(SourceConfig(path=str(tmp_path), image_size=16, channels=[2, 0]))[0]
    full = np.asarray(Image.open(tmp_path / "j.jpg")).transpose(2, 0, 1)
    np.testing.assert_array_equal(record["image"], full[[2, 0], 2:18, 2:18])


def test_truncated_jpeg_names_the_file(tmp_path):
    Image.fromarray(rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(tmp_path / "cut.jpg")
    blob = (tmp_path / "cut.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(blob[: len(blob) // 3])
    with pytest.raises(ObjectError, match="truncated") as info:
        open_source(SourceConfig(path=str(tmp_path)))[0]
    assert info.value.obj_id == "cut" and info.value.file.endswith("cut.jpg")
