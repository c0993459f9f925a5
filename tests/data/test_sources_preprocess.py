"""Shared preprocessing: layouts, centre crop/pad, stretch, finiteness."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astropt.data.sources import SourceConfig
from astropt.data.sources.preprocess import (
    BadArray,
    center_crop_pad,
    prepare_image,
    stretch,
    to_chw,
)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 20), w=st.integers(1, 20), size=st.integers(1, 20))
def test_crop_pad_keeps_the_centre_pixel(h, w, size):
    x = np.arange(h * w, dtype=np.float32).reshape(1, h, w) + 1
    out = center_crop_pad(x, size)
    assert out.shape == (1, size, size)
    assert out[0, size // 2, size // 2] == x[0, h // 2, w // 2]
    # Every kept pixel is the source pixel at the same offset from the centre; the rest is pad.
    kept = out[out != 0]
    assert set(kept.tolist()) <= set(x.ravel().tolist()) and kept.size == min(h, size) * min(w, size)


def test_crop_then_pad_back_restores_the_centre():
    x = np.random.default_rng(0).normal(size=(2, 10, 10)).astype(np.float32)
    small = center_crop_pad(x, 6)
    np.testing.assert_array_equal(small, x[:, 2:8, 2:8])
    np.testing.assert_array_equal(center_crop_pad(small, 10)[:, 2:8, 2:8], small)


def test_layouts():
    hwc = np.random.default_rng(1).normal(size=(6, 5, 3)).astype(np.float32)
    np.testing.assert_array_equal(to_chw(hwc), hwc.transpose(2, 0, 1))
    np.testing.assert_array_equal(to_chw(hwc, hwc_to_chw="swapaxes"), np.swapaxes(hwc, 0, 2))
    np.testing.assert_array_equal(to_chw(hwc[..., 0]), hwc[None, ..., 0])
    chw = hwc.transpose(2, 0, 1)
    np.testing.assert_array_equal(to_chw(chw), chw)
    with pytest.raises(BadArray, match="2-D"):
        to_chw(np.zeros((2, 2, 2, 2)))
    with pytest.raises(BadArray, match="non-numeric"):
        to_chw(np.array([["a"]]))


def test_stretch_and_nan():
    x = np.array([[[0.0, 1.0, 100.0]]], np.float32)
    np.testing.assert_allclose(stretch(x, "asinh", 2.0), np.arcsinh(x / 2.0))
    np.testing.assert_allclose(stretch(-x, "log"), 0.0)
    with pytest.raises(BadArray, match="1 NaN and 0 Inf"):
        prepare_image(np.array([[1.0, np.nan]]), SourceConfig())
    out = prepare_image(np.ones((3, 4, 4)), SourceConfig(stretch="log", image_size=2, channels=[1]))
    np.testing.assert_allclose(out, np.log1p(np.ones((1, 2, 2))))
