"""The config's token sizes are the ones each tokeniser produces (the classes own them)."""

from __future__ import annotations

import pytest
from fake_records import records_for

from astropt.config import TOKEN_SIZES, ConfigError, ModalityConfig, ModelConfig
from astropt.modalities import build_modality

MODALITIES = {
    "image": dict(kind="image", image_size=16, patch_size=4, n_channels=3),
    "image+flux": dict(kind="image", image_size=16, patch_size=8, n_channels=2, flux_features=True),
    "spectrum": dict(kind="spectrum", patch_size=8, max_tokens=4),
    "timeseries": dict(kind="timeseries", bands=["g", "r"], max_tokens=16),
    "scalars": dict(kind="scalars", scalar_names=["mag_r", "mag_g"]),
}


@pytest.mark.parametrize("name", sorted(MODALITIES))
def test_derived_sizes_are_the_tokens_sizes(name):
    config = ModalityConfig(name="m", **MODALITIES[name])
    records = records_for(ModelConfig(modalities=[config], block_size=64), 2)
    tokens = build_modality(config).tokenize_records(records)
    assert tokens.values.shape[-1] == config.input_size
    if config.position == "continuous":
        assert tokens.positions.shape[-1] == config.pos_input_size
    else:
        assert tokens.positions.ndim == 2


def test_every_tokeniser_kind_registers_its_sizes():
    assert set(TOKEN_SIZES) == {"image", "spectrum", "timeseries", "scalars", "discrete"}
    with pytest.raises(ConfigError, match="input_size 7 does not match"):
        ModalityConfig(name="s", kind="spectrum", patch_size=8, max_tokens=4, input_size=7)
