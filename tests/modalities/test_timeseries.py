"""Light-curve tokeniser: round trips, time features, sorting/duplicates, padding, bad input."""

import logging

import numpy as np
import pytest
import torch

from astropt.config import ConfigError, ModalityConfig
from astropt.modalities import TimeSeriesModality, TokenizationError, build_modality

BANDS = ["g", "r", "i"]


def lightcurve(n=30, seed=0, period=3.7):
    """A small periodic multi-band light curve on an irregular cadence (days)."""
    rng = np.random.default_rng(seed)
    time = np.sort(rng.uniform(0, 100, n)) + 59000.0
    band = rng.integers(0, len(BANDS), n)
    flux = 10 + (1 + 0.3 * band) * np.sin(2 * np.pi * time / period) + 0.05 * rng.normal(size=n)
    err = np.full(n, 0.05)
    return {"lightcurve_time": time, "lightcurve_band": band, "lightcurve_flux": flux, "lightcurve_err": err}


def make(max_tokens=40):
    cfg = ModalityConfig(name="lc", kind="timeseries", field="lightcurve", bands=BANDS, max_tokens=max_tokens)
    return build_modality(cfg)


def test_config():
    cfg = make().config
    assert (cfg.input_size, cfg.pos_input_size, cfg.position) == (5, 32, "continuous")
    with pytest.raises(ConfigError, match="bands"):
        ModalityConfig(name="lc", kind="timeseries", max_tokens=4)


def test_round_trip_and_features():
    m = make()
    assert isinstance(m, TimeSeriesModality)
    lc = lightcurve()
    tokens = m.tokenize(*(lc[f"lightcurve_{k}"] for k in ("time", "band", "flux", "err")))
    assert tokens.values.shape == (30, 5) and tokens.positions.shape == (30, 32)
    back = m.detokenize(tokens)
    np.testing.assert_allclose(back["flux"].numpy(), lc["lightcurve_flux"], rtol=1e-5)
    np.testing.assert_allclose(back["err"].numpy(), lc["lightcurve_err"], rtol=1e-4)
    np.testing.assert_array_equal(back["band"].numpy(), lc["lightcurve_band"])
    np.testing.assert_array_equal(back["time"].numpy(), lc["lightcurve_time"])
    # Time features: the first point sits at t=0 (sin 0, cos 1); the last has no next step.
    assert torch.allclose(tokens.positions[0, :16], torch.tensor([0.0] * 8 + [1.0] * 8))
    assert torch.allclose(tokens.positions[-1, 16:], torch.tensor([0.0] * 8 + [1.0] * 8))
    # Shifting all times changes nothing (features are relative to the first point).
    shifted = dict(lc, lightcurve_time=lc["lightcurve_time"] + 1234.5)
    torch.testing.assert_close(m.tokenize_records([shifted]).positions[0], tokens.positions, atol=1e-4, rtol=0)


def test_band_names_and_padding():
    m = make()
    short = lightcurve(n=12, seed=1)
    named = dict(short, lightcurve_band=np.array(BANDS)[short["lightcurve_band"]])
    batch = m.tokenize_records([dict(lightcurve(), id="a"), dict(named, id="b"), {"id": "c"}])
    assert batch.values.shape == (3, 30, 5)
    assert batch.mask.sum(1).tolist() == [30, 12, 0]
    assert (batch.values[1, 12:] == 0).all() and (batch.positions[1, 12:] == 0).all()
    back = m.detokenize(batch)
    np.testing.assert_allclose(back["flux"][1, :12].numpy(), short["lightcurve_flux"], rtol=1e-5)
    single = m.tokenize_records([short])
    torch.testing.assert_close(batch.values[1, :12], single.values[0])


def test_unsorted_and_duplicates_are_fixed_with_warning(caplog):
    m = make()
    lc = lightcurve(n=10)
    order = np.random.default_rng(3).permutation(10)
    messy = {k: np.concatenate([v[order], v[:1]]) for k, v in lc.items()}  # shuffled + a repeat
    messy["lightcurve_flux"][-1] += 1.0
    with caplog.at_level(logging.WARNING):
        tokens = m.tokenize_records([dict(messy, id="star-7")])
    assert "star-7" in caplog.text and "not sorted" in caplog.text and "averaged" in caplog.text
    back = m.detokenize(tokens)
    np.testing.assert_array_equal(back["time"][0].numpy(), lc["lightcurve_time"])
    expected = lc["lightcurve_flux"].copy()
    expected[0] += 0.5  # the mean of the two measurements
    np.testing.assert_allclose(back["flux"][0].numpy(), expected, rtol=1e-5)
    assert np.isclose(float(back["err"][0, 0]), np.sqrt(2) * 0.05 / 2, rtol=1e-4)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda lc: dict(lc, lightcurve_time=np.full(30, np.nan)), "time contains NaN"),
        (lambda lc: dict(lc, lightcurve_flux=np.full(30, np.nan)), "no point with finite"),
        (lambda lc: dict(lc, lightcurve_band=np.array(["u"] * 30)), "unknown bands"),
        (lambda lc: {k: np.tile(v, 2) + (np.arange(60) * 0.01 if "time" in k else 0) for k, v in lc.items()}, "max_tokens"),
        (lambda lc: {k: v for k, v in lc.items() if "err" not in k}, "lacks"),
    ],
)
def test_bad_input_names_the_object(change, message):
    with pytest.raises(TokenizationError, match=message) as err:
        make().tokenize_records([dict(change(lightcurve()), id="star-9")])
    assert "star-9" in str(err.value)
