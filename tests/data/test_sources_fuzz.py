"""Fuzzing the readers: each case has one right outcome, and the test asserts it.

Random bytes (with or without a format's magic header) are never a valid file: DataError.
The same files written validly are read. A random array shape is an image exactly when it
is 2-D or 3-D without an empty axis, and then has the shape the layout rules give.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astropt.data.shards import DataError
from astropt.data.sources import SourceConfig, open_source
from astropt.data.sources.preprocess import BadArray, prepare_image

FUZZ = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
HEADERS = {
    "fits": b"SIMPLE  =                    T",
    "png": b"\x89PNG\r\n\x1a\n",
    "jpg": b"\xff\xd8\xff\xe0",
    "h5": b"\x89HDF\r\n\x1a\n",
    "npy": b"\x93NUMPY\x01\x00",
}


def read_bytes_as(suffix: str, blob: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / f"obj.{suffix}"
        path.write_bytes(blob)
        if suffix in ("h5", "npy"):
            source = open_source(SourceConfig(path=str(path)))
        else:
            source = open_source(SourceConfig(path=str(folder)))
        source[0]


@pytest.mark.parametrize("suffix", sorted(HEADERS))
@FUZZ
@given(data=st.binary(max_size=400), with_header=st.booleans())
def test_random_bytes_give_data_error(suffix, data, with_header):
    blob = (HEADERS[suffix] if with_header else b"") + data
    with pytest.raises(DataError):
        read_bytes_as(suffix, blob)


def valid_file(suffix: str, image: np.ndarray) -> bytes:
    """``image`` (2, 8, 8) written as a real file of each format (8-bit formats: band 0)."""
    buffer = io.BytesIO()
    if suffix == "fits":
        from astropy.io import fits

        fits.PrimaryHDU(image).writeto(buffer)
    elif suffix in ("png", "jpg"):
        from PIL import Image

        Image.fromarray((image[0] * 255).astype(np.uint8)).save(buffer, format="PNG" if suffix == "png" else "JPEG")
    elif suffix == "h5":
        import h5py

        with h5py.File(buffer, "w") as f:
            f["images"] = image[None]
    else:
        np.save(buffer, image[None])
    return buffer.getvalue()


@pytest.mark.parametrize("suffix", sorted(HEADERS))
def test_the_same_formats_written_validly_are_read(suffix):
    image = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"obj.{suffix}"
        path.write_bytes(valid_file(suffix, image))
        source = open_source(SourceConfig(path=str(path if suffix in ("h5", "npy") else Path(tmp))))
        record = source[0]
    bands = 1 if suffix in ("png", "jpg") else 2
    assert record["image"].shape == (bands, 8, 8)
    if suffix in ("fits", "h5", "npy"):
        np.testing.assert_array_equal(record["image"], image)


def expected_image_shape(shape: list[int], size: int) -> tuple[int, ...] | None:
    """The layout rules of ``to_chw`` (``auto``) and the centre crop, as an oracle."""
    if len(shape) not in (2, 3) or min(shape) == 0:
        return None
    if len(shape) == 2:
        c, h, w = 1, *shape
    else:
        a, b, last = shape
        c, h, w = (last, a, b) if last <= 4 < a else (a, b, last)
    return (c, size, size) if size else (c, h, w)


@FUZZ
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=5), size=st.integers(0, 5))
def test_random_shapes_give_the_right_image_or_bad_array(shape, size):
    x = np.ones(shape, dtype=np.float32)
    expected = expected_image_shape(shape, size)
    if expected is None:
        with pytest.raises(BadArray):
            prepare_image(x, SourceConfig(image_size=size))
        return
    out = prepare_image(x, SourceConfig(image_size=size))
    assert out.shape == expected and out.dtype == np.float32 and np.isfinite(out).all()
