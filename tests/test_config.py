"""Typed configs: unknown keys and wrong types name the key, overrides, YAML/TOML, validation,
and every shipped config loads."""

from pathlib import Path

import pytest

from astropt.config import (
    ConfigError,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    load_config,
    save_config,
)

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "text,key",
    [
        ("model:\n  n_layers: 4\n", "n_layers"),
        ("modle:\n  n_layer: 4\n", "modle"),
        ("train:\n  learning_rate: 0.1\n", "learning_rate"),
        ("model:\n  modalities:\n    - name: images\n      patchsize: 8\n", "model.modalities.0.patchsize"),
    ],
)
def test_unknown_key_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, "c.yaml", text))


@pytest.mark.parametrize(
    "text,key",
    [
        ("model:\n  n_layer: four\n", "model.n_layer"),
        ("model:\n  bias: 1\n", "model.bias"),
        ("train:\n  lr: fast\n", "train.lr"),
        ("model:\n  attn: sideways\n", "model.attn"),
        ("model:\n  modalities:\n    - name: images\n      patch_order: zigzag\n", "patch_order"),
    ],
)
def test_wrong_type_or_value_is_named(tmp_path, text, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(write(tmp_path, "c.yaml", text))


def test_yaml_and_toml_give_the_same_config(tmp_path):
    yaml_text = (
        "model:\n  n_layer: 2\n  n_embd: 64\n  modalities:\n"
        "    - {name: images, kind: image, image_size: 32, patch_size: 8, n_channels: 4, bands: [g, r, i, z]}\n"
        "train:\n  lr: 3e-4\n  max_steps: 10\n"
    )
    toml_text = (
        "[model]\nn_layer = 2\nn_embd = 64\n[[model.modalities]]\nname = 'images'\nkind = 'image'\n"
        "image_size = 32\npatch_size = 8\nn_channels = 4\nbands = ['g', 'r', 'i', 'z']\n"
        "[train]\nlr = 3e-4\nmax_steps = 10\n"
    )
    a = load_config(write(tmp_path, "c.yaml", yaml_text))
    b = load_config(write(tmp_path, "c.toml", toml_text))
    assert a == b
    assert a.train.lr == pytest.approx(3e-4)  # YAML 1.1 reads 3e-4 as a string: converted
    assert a.model.modalities[0].input_size == 8 * 8 * 4  # derived
    assert a.model.n_head == ModelConfig().n_head  # unspecified: default


def test_overrides_in_cli_syntax(tmp_path):
    path = write(tmp_path, "c.yaml", "model:\n  n_layer: 2\n")
    cfg = load_config(path, ["model.n_layer=6", "train.lr=1e-3", "model.bias=true",
                             "model.modalities.0.patch_size=8", "data.batch_size=4"])
    assert (cfg.model.n_layer, cfg.train.lr, cfg.model.bias) == (6, 1e-3, True)
    assert cfg.model.modalities[0].patch_size == 8 and cfg.data.batch_size == 4
    with pytest.raises(ConfigError, match="model.n_layr"):
        load_config(path, ["model.n_layr=3"])
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(path, ["model.n_layer"])


def test_save_then_load_is_identical(tmp_path):
    cfg = load_config(None, ["model.n_layer=3", "train.max_steps=7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg


def test_block_size_smaller_than_the_sequence_is_an_error():
    mods = [ModalityConfig(name="images", image_size=64, patch_size=8)]  # 64 tokens
    with pytest.raises(ConfigError, match="block_size 32"):
        ModelConfig(block_size=32, modalities=mods)
    assert ModelConfig(block_size=64, modalities=mods).sequence_length == 64


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(image_size=60, patch_size=8), "multiple"),
        (dict(n_channels=3, bands=["g", "r"]), "bands"),
        (dict(input_size=10), "input_size"),
    ],
)
def test_inconsistent_modalities_are_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ModalityConfig(name="images", **kwargs)


def test_model_level_validation():
    with pytest.raises(ConfigError, match="divisible"):
        ModelConfig(n_embd=30, n_head=4)
    with pytest.raises(ConfigError, match="duplicate"):
        ModelConfig(modalities=[ModalityConfig(name="a", image_size=16), ModalityConfig(name="a", image_size=16)])
    with pytest.raises(ConfigError, match="embed_layer"):
        ModelConfig(n_layer=2, embed_layer=2)


def test_missing_and_unparsable_files(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="bad.yaml"):
        load_config(write(tmp_path, "bad.yaml", "model: [unclosed\n"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(write(tmp_path, "list.yaml", "- 1\n- 2\n"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.model.sequence_length <= cfg.model.block_size
