"""Fuzzing the readers: random bytes and random shapes give DataError, never anything else."""

from __future__ import annotations

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
    try:
        read_bytes_as(suffix, blob)
    except DataError:
        pass  # the only acceptable failure; a successful read of a valid file is fine too


@FUZZ
@given(shape=st.lists(st.integers(0, 6), min_size=0, max_size=5), size=st.integers(0, 5))
def test_random_shapes_give_an_image_or_bad_array(shape, size):
    x = np.ones(shape, dtype=np.float32)
    try:
        out = prepare_image(x, SourceConfig(image_size=size))
    except BadArray:
        return
    assert out.ndim == 3 and out.dtype == np.float32 and np.isfinite(out).all()
    if size:
        assert out.shape[1:] == (size, size)
