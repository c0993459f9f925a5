"""Spectrum tokeniser: exact round trips, grid-independent positions, padding, bad input."""

import numpy as np
import pytest
import torch

from astropt.config import ConfigError, ModalityConfig
from astropt.modalities import SpectrumModality, TokenizationError, build_modality


def make(window=8, max_tokens=12, **kw):
    cfg = ModalityConfig(name="spectrum", kind="spectrum", patch_size=window, max_tokens=max_tokens, **kw)
    return build_modality(cfg)


def spectrum(n=53, lo=4000.0, hi=9000.0, seed=0):
    rng = np.random.default_rng(seed)
    wl = np.linspace(lo, hi, n)
    return 1e-17 * (2 + np.sin(wl / 300) + 0.1 * rng.normal(size=n)), wl


def test_config_derives_sizes():
    cfg = ModalityConfig(name="s", kind="spectrum", patch_size=16, max_tokens=4)
    assert (cfg.input_size, cfg.pos_input_size, cfg.position) == (16, 2, "continuous")
    with pytest.raises(ConfigError, match="max_tokens"):
        ModalityConfig(name="s", kind="spectrum", patch_size=16)
    with pytest.raises(ConfigError, match="wavelength_range"):
        ModalityConfig(name="s", kind="spectrum", max_tokens=4, wavelength_range=[5000.0, 4000.0])


def test_round_trip_single_and_batch():
    m = make()
    assert isinstance(m, SpectrumModality)
    flux, wl = spectrum()
    tokens = m.tokenize(flux, wl)
    assert tokens.values.shape == (7, 8)  # ceil(53 / 8) windows, tail padded
    back = m.detokenize(tokens).numpy()
    np.testing.assert_allclose(back, flux, rtol=1e-5)
    # Normalised tokens: zero mean, unit variance over the real samples.
    real = tokens.values.reshape(-1)[:53]
    assert abs(float(real.mean())) < 1e-5 and abs(float(real.std()) - 1) < 1e-4
    assert torch.all(tokens.stats["weights"].reshape(-1)[53:] == 0)

    records = [
        {"id": "a", "spectrum": flux, "spectrum_wavelength": wl},
        {"id": "b", "spectrum": flux[:20], "spectrum_wavelength": wl[:20]},
        {"id": "c"},  # missing modality: fully masked
    ]
    batch = m.tokenize_records(records)
    assert batch.values.shape == (3, 7, 8)
    assert batch.mask.tolist() == [[True] * 7, [True] * 3 + [False] * 4, [False] * 7]
    flat = m.detokenize(batch)
    np.testing.assert_allclose(flat[0, :53].numpy(), flux, rtol=1e-5)
    assert torch.isnan(flat[0, 53:]).all()
    np.testing.assert_allclose(flat[1, :20].numpy(), flux[:20], rtol=1e-5)
    assert torch.isnan(flat[1, 20:]).all()
    # Object a's tokens do not depend on the rest of the batch.
    torch.testing.assert_close(batch.values[0], tokens.values)


def test_positions_follow_wavelength_not_grid():
    m = make(window=8)
    coarse = m.tokenize(*spectrum(n=40, lo=4000, hi=8000))
    fine_flux, fine_wl = spectrum(n=80, lo=4000, hi=8000)
    fine = m.tokenize(fine_flux, fine_wl)
    # Same wavelength range -> same span of positions, whatever the sampling.
    assert torch.allclose(coarse.positions[0, 0], fine.positions[0, 0])
    assert torch.allclose(coarse.positions[-1, 1], fine.positions[-1, 1], atol=1e-6)
    lo, hi = 2 * (np.log([4000, 8000]) - np.log(3000)) / (np.log(11000) - np.log(3000)) - 1
    assert np.isclose(float(fine.positions[0, 0]), lo, atol=1e-6)
    assert np.isclose(float(fine.positions[-1, 1]), hi, atol=1e-6)
    assert torch.all(fine.positions[1:, 0] > fine.positions[:-1, 1])  # increasing


def test_isolated_nan_is_masked_and_restored():
    m = make()
    flux, wl = spectrum()
    flux[10] = np.nan
    tokens = m.tokenize(flux, wl)
    assert torch.isfinite(tokens.values).all()
    assert tokens.stats["weights"].reshape(-1)[10] == 0
    back = m.detokenize(tokens).numpy()
    assert np.isnan(back[10])
    np.testing.assert_allclose(np.delete(back, 10), np.delete(flux, 10), rtol=1e-5)
    # A whole window of NaN becomes a masked token.
    flux[16:24] = np.nan
    assert m.tokenize(flux, wl).mask.tolist() == [True, True, False, True, True, True, True]


def test_ivar_weights():
    m = make(ivar_weights=True)
    flux, wl = spectrum()
    ivar = np.full_like(flux, 1e34)
    ivar[:8] *= 4  # a better-measured first window
    ivar[30] = 0  # a bad pixel
    rec = {"id": "x", "spectrum": flux, "spectrum_wavelength": wl, "spectrum_ivar": ivar}
    w = m.tokenize_records([rec]).stats["weights"][0].reshape(-1)
    assert torch.allclose(w[:8], torch.full((8,), 4.0)) and w[30] == 0 and w[20] == 1


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f, w: (f, w[::-1].copy()), "not strictly increasing"),
        (lambda f, w: (f[:5], w[:5]), "shorter than one window"),
        (lambda f, w: (np.full_like(f, np.nan), w), "no finite flux"),
        (lambda f, w: (np.tile(f, 3), np.linspace(4000, 9000, 159)), "max_tokens"),
        (lambda f, w: (f, w[:-1]), "equal length"),
    ],
)
def test_bad_input_names_the_object(change, message):
    m = make()
    flux, wl = change(*spectrum())
    rec = {"id": "gal-42", "spectrum": flux, "spectrum_wavelength": wl}
    with pytest.raises(TokenizationError, match=message) as err:
        m.tokenize_records([rec])
    assert "gal-42" in str(err.value)
