"""Scalar tokeniser: round trip, standardisation, lookup rules, missing values."""

import numpy as np
import pytest
import torch

from astropt.config import ConfigError, ModalityConfig
from astropt.modalities import ScalarsModality, TokenizationError, build_modality

NAMES = ["mag_r", "g_r", "photometry[2]"]


def make(**kw):
    return build_modality(ModalityConfig(name="cat", kind="scalars", scalar_names=NAMES, **kw))


def test_config():
    cfg = make().config
    assert (cfg.input_size, cfg.max_tokens, cfg.n_tokens) == (1, 3, 3)
    with pytest.raises(ConfigError, match="scalar_std"):
        ModalityConfig(name="c", kind="scalars", scalar_names=NAMES, scalar_std=[1.0, 2.0])
    with pytest.raises(ConfigError, match="scalar_names"):
        ModalityConfig(name="c", kind="scalars")


def test_round_trip_with_standardisation_and_lookup():
    m = make(scalar_mean=[20.0, 0.5, 21.0], scalar_std=[2.0, 0.25, 1.0])
    assert isinstance(m, ScalarsModality)
    records = [
        {"id": "a", "labels": {"mag_r": 22.0, "g_r": 0.75}, "photometry": np.array([23.0, 22.5, 22.0, 21.8])},
        {"id": "b", "labels": {"mag_r": 18.0}, "g_r": np.float32(0.25)},  # photometry missing
        {"id": "c", "labels": {"mag_r": float("nan"), "g_r": 1.0}, "photometry": np.zeros(4)},
    ]
    tokens = m.tokenize_records(records)
    assert tokens.values.shape == (3, 3, 1)
    torch.testing.assert_close(tokens.values[0, :, 0], torch.tensor([1.0, 1.0, 1.0]))
    assert tokens.positions.tolist() == [[0, 1, 2]] * 3  # the per-name embedding index
    assert tokens.mask.tolist() == [[True, True, True], [True, True, False], [False, True, True]]
    back = m.detokenize(tokens)
    expected = np.array([[22.0, 0.75, 22.0], [18.0, 0.25, np.nan], [np.nan, 1.0, 0.0]])
    np.testing.assert_allclose(back.numpy(), expected, rtol=1e-6)
    single = m.tokenize([22.0, 0.75, 22.0])
    torch.testing.assert_close(single.values, tokens.values[0])


def test_non_numeric_value_names_the_object():
    with pytest.raises(TokenizationError, match="'obj-3'.*'mag_r'"):
        make().tokenize_records([{"id": "obj-3", "labels": {"mag_r": "bright"}}])
