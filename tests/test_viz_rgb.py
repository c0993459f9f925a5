"""One RGB composite everywhere: bands in wavelength order, reddest as red, bluest as blue."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

USERS = ["astropt.viz", "astropt.train.figures", "astropt.data.figures", "astropt.data.synthetic.gallery"]


def one_band_lit(n_bands: int, band: int) -> np.ndarray:
    image = np.zeros((n_bands, 16, 16))
    image[band, 4:12, 4:12] = 1.0
    return image


@pytest.mark.parametrize("module", USERS)
@pytest.mark.parametrize("n_bands", [3, 4, 5])
def test_reddest_band_is_red_and_bluest_is_blue(module, n_bands):
    composite = importlib.import_module(module).rgb_composite
    red = composite(one_band_lit(n_bands, n_bands - 1))
    blue = composite(one_band_lit(n_bands, 0))
    assert red.shape == (16, 16, 3) and 0 <= red.min() and red.max() <= 1
    assert red[8, 8, 0] > 0.5 and red[8, 8, 1:].max() < 0.1
    assert blue[8, 8, 2] > 0.5 and blue[8, 8, :2].max() < 0.1


def test_one_band_is_grey():
    from astropt.viz import rgb_composite

    grey = rgb_composite(one_band_lit(1, 0))
    np.testing.assert_array_equal(grey[..., 0], grey[..., 2])
