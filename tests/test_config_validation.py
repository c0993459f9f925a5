"""Config values that cannot work are refused at load, naming the key, before any work."""

from __future__ import annotations

import pytest

from astropt.cli import main
from astropt.config import ConfigError, load_config


@pytest.mark.parametrize(
    "override, key",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("data.val_fraction=0", "data.val_fraction"),
        ("data.num_workers=-1", "data.num_workers"),
        ("train.ckpt_interval=-5", "train.ckpt_interval"),
        ("train.keep_last=-1", "train.keep_last"),
        ("train.warmup_steps=-1", "train.warmup_steps"),
        ("train.max_steps.foo=1", "train.max_steps"),
        ("model.modalities.7.patch_size=4", "model.modalities.7"),
        ("model.modalities.x.patch_size=4", "model.modalities.x"),
    ],
)
def test_bad_values_and_overrides_are_config_errors(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, [override])


def test_a_bad_batch_size_is_refused_before_the_run_folder_exists(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", f"train.out_dir={run}", "data.synth_n=0", "data.batch_size=0"]) == 2
    assert "data.batch_size" in capsys.readouterr().err
    assert not run.exists()
