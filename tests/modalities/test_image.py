"""Image tokeniser: exact inverse, the reference's patch layout / normalisation / spiral
order, and clear errors on bad images."""

import numpy as np
import pytest
import torch

from astropt.config import ModalityConfig
from astropt.modalities import build_modality
from astropt.modalities.base import TokenizationError
from astropt.modalities.image import patchify, spiral_order

# Position in the token sequence of each patch of the grid (ARCHITECTURE.md).
GRID_4 = [[15, 14, 13, 12], [4, 3, 2, 11], [5, 0, 1, 10], [6, 7, 8, 9]]
GRID_5 = [
    [24, 23, 22, 21, 20],
    [9, 8, 7, 6, 19],
    [10, 1, 0, 5, 18],
    [11, 2, 3, 4, 17],
    [12, 13, 14, 15, 16],
]


def image_modality(channels=3, patch=4, order="spiral", size=16, **kw):
    return build_modality(ModalityConfig(name="images", kind="image", image_size=size, n_channels=channels,
                                         patch_size=patch, patch_order=order, **kw))


def sequence_positions(n_rows, n_cols):
    """For each raster patch index, its position in the spiral sequence, as a grid."""
    pos = np.empty(n_rows * n_cols, dtype=int)
    pos[list(spiral_order(n_rows, n_cols))] = np.arange(n_rows * n_cols)
    return pos.reshape(n_rows, n_cols).tolist()


def test_spiral_grids_of_the_reference():
    assert sequence_positions(4, 4) == GRID_4
    assert sequence_positions(5, 5) == GRID_5


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8])
def test_spiral_is_a_permutation_starting_at_the_centre_and_ending_top_left(n):
    order = spiral_order(n, n)
    assert sorted(order) == list(range(n * n))
    r, c = divmod(order[0], n)
    if n % 2:  # odd grids have one centre patch
        assert (r, c) == (n // 2, n // 2)
    else:  # even grids: one of the central 2x2 patches
        assert {r, c} <= {n // 2 - 1, n // 2}
    assert order[-1] == 0


def test_tokens_follow_the_spiral_through_the_pipeline():
    """Each patch is constant = its raster index: the token sequence spells the spiral."""
    mod = image_modality(channels=1, patch=2, size=10, normalize="none")
    index = np.arange(25, dtype=np.float32).reshape(5, 5)
    image = np.kron(index, np.ones((2, 2), dtype=np.float32))[None]  # (1, 10, 10)
    tokens = mod.tokenize(torch.from_numpy(image))
    seq = tokens.values[:, 0].numpy()
    grid = np.empty(25, dtype=int)
    grid[seq.astype(int)] = np.arange(25)
    assert grid.reshape(5, 5).tolist() == GRID_5


def test_patch_vector_layout_is_row_col_channel_with_channel_fastest():
    c, p = 3, 2
    img = torch.arange(c * 4 * 4, dtype=torch.float32).reshape(1, c, 4, 4)
    patches = patchify(img, p)
    # patch 1 of the raster grid = rows 0..1, cols 2..3
    expected = [img[0, ch, r, 2 + col].item() for r in range(p) for col in range(p) for ch in range(c)]
    assert patches[0, 1].tolist() == expected


def test_per_patch_normalisation_uses_the_unbiased_std():
    mod = image_modality(channels=2, patch=4, order="raster")
    img = torch.randn(2, 16, 16, dtype=torch.float64) * 5 + 3
    tokens = mod.tokenize(img)
    raw = patchify(img[None], 4)[0]
    mean = raw.mean(-1, keepdim=True)
    std = raw.std(-1, unbiased=True, keepdim=True)
    torch.testing.assert_close(tokens.values, (raw - mean) / (std + 1e-8))
    torch.testing.assert_close(tokens.values.std(-1), torch.ones(16, dtype=torch.float64))


@pytest.mark.parametrize("order", ["spiral", "raster"])
@pytest.mark.parametrize("channels,patch,h,w", [(1, 4, 16, 16), (3, 4, 20, 20), (4, 8, 64, 64), (2, 2, 6, 10),
                                                 (5, 3, 9, 12)])
def test_tokenize_detokenize_round_trip(order, channels, patch, h, w):
    mod = image_modality(channels=channels, patch=patch, order=order, size=patch)
    rng = np.random.default_rng(channels * 100 + h)
    scale = 1e4  # fluxes far from unit scale: tolerance is relative to the image
    img = (rng.normal(size=(2, channels, h, w)) * scale + 3 * scale).astype(np.float32)
    tokens = mod.tokenize(img)
    assert tokens.values.shape == (2, (h // patch) * (w // patch), patch * patch * channels)
    back = mod.detokenize(tokens).numpy()
    np.testing.assert_allclose(back, img, rtol=0, atol=1e-5 * np.abs(img).max())
    single = mod.tokenize(img[0])  # (C, H, W) without a batch axis
    np.testing.assert_allclose(mod.detokenize(single).numpy(), img[0], rtol=0, atol=1e-5 * np.abs(img).max())
    torch.testing.assert_close(single.values, tokens.values[0])


def test_transposed_convention_round_trips():
    mod = image_modality(channels=3, patch=4, transpose_hw=True)
    img = torch.randn(3, 16, 8)
    ref = image_modality(channels=3, patch=4).tokenize(img.transpose(-1, -2))
    tokens = mod.tokenize(img)
    torch.testing.assert_close(tokens.values, ref.values)
    torch.testing.assert_close(mod.detokenize(tokens), img, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "image,match",
    [
        (np.zeros((3, 15, 16), np.float32), "multiple of the patch size"),
        (np.zeros((3, 16, 18), np.float32), "multiple of the patch size"),
        (np.zeros((2, 16, 16), np.float32), "2 channels"),
        (np.zeros((16, 16), np.float32), "shape"),
    ],
)
def test_bad_shapes_are_refused(image, match):
    with pytest.raises(TokenizationError, match=match):
        image_modality(channels=3, patch=4).tokenize(image)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad):
    img = np.ones((3, 16, 16), np.float32)
    img[1, 3, 7] = bad
    with pytest.raises(TokenizationError, match="NaN or Inf"):
        image_modality().tokenize(img)


def test_records_name_the_objects():
    mod = image_modality()
    good = {"id": "gal-1", "image": np.ones((3, 16, 16), np.float32)}
    with pytest.raises(TokenizationError, match="gal-2"):
        mod.tokenize_records([good, {"id": "gal-2"}])
    bad = {"id": "gal-3", "image": np.full((3, 16, 16), np.nan, np.float32)}
    with pytest.raises(TokenizationError, match="gal-3"):
        mod.tokenize_records([good, bad])


def test_flux_features_keep_brightness_and_colour_that_standardisation_removes():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.normal(0.01, 0.002, (2, 16, 16))).float()
    scaled = image.clone()
    scaled[0] *= 10.0  # 10x brighter in band 0 only: another colour
    for scale in (0.0, 0.002):
        m = image_modality(channels=2, patch=8, flux_features=True, flux_scale=scale)
        a, b = m.tokenize(image), m.tokenize(scaled)
        pixels = 8 * 8 * 2
        assert a.values.shape[-1] == pixels + 4 == m.config.input_size
        assert not torch.allclose(a.values[:, :pixels], b.values[:, :pixels])  # colour changed
        feats_a, feats_b = a.values[:, pixels:], b.values[:, pixels:]
        # Features: asinh(mean) of bands 0, 1, then log std of bands 0, 1.
        assert (feats_b[:, [0, 2]] > feats_a[:, [0, 2]]).all()  # band 0 brighter and wider
        torch.testing.assert_close(feats_a[:, [1, 3]], feats_b[:, [1, 3]])  # band 1 untouched
        back = m.detokenize(a)  # the pixels still invert exactly
        torch.testing.assert_close(back, image, rtol=1e-4, atol=1e-6)
    # Survey-scaled features are in units of the scale: order 1 rather than ~1e-2 and -6.
    patch = patchify(image.unsqueeze(0), 8)[0, 0].reshape(-1, 2)
    expected = torch.cat([torch.asinh(patch.mean(0) / 0.002), torch.log1p(patch.std(0) / 0.002)])
    first_raster = image_modality(channels=2, patch=8, order="raster", flux_features=True,
                                  flux_scale=0.002).tokenize(image).values[0, 8 * 8 * 2:]
    torch.testing.assert_close(first_raster, expected, rtol=1e-5, atol=1e-5)
    assert 0.5 < expected.abs().max() < 10


def test_negative_flux_scale_is_a_config_error():
    from astropt.config import ConfigError

    with pytest.raises(ConfigError, match="flux_scale"):
        image_modality(flux_features=True, flux_scale=-1.0)


def test_patch_4_of_the_survey_image_with_spiral_order_and_flux_features():
    """The ``patch 4`` lever: 64x64 griz cut into 256 tokens, spiral order, flux features."""
    image = torch.from_numpy(np.random.default_rng(1).normal(0.01, 0.003, (4, 64, 64))).float()
    spiral, raster = (image_modality(channels=4, patch=4, order=order, size=64, flux_features=True,
                                     flux_scale=0.002) for order in ("spiral", "raster"))
    tokens = spiral.tokenize(image)
    assert tokens.values.shape == (256, 4 * 4 * 4 + 8) and spiral.config.input_size == 72
    order = list(spiral_order(16, 16))
    torch.testing.assert_close(tokens.values, raster.tokenize(image).values[order])  # same tokens, spiral order
    torch.testing.assert_close(spiral.detokenize(tokens), image, rtol=1e-4, atol=1e-6)
