"""Text through the data pipeline: a caption label or a templated catalogue line reaches the
batch as ``text`` (strings; the LLM tokenises them), with named errors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from astropt.config import TEXT, ConfigError, ModalityConfig, ModelConfig, TextConfig
from astropt.data.loader import Collator, ResumableLoader, ShardDataset, to_device
from astropt.data.shards import ArraySpec, finalize, write_shard
from astropt.errors import TokenizationError

CAPTIONS = ["a red elliptical galaxy", "a blue spiral galaxy", "a faint compact star"]


def _config(text: TextConfig, backbone: str = "llm") -> ModelConfig:
    image = ModalityConfig(image_size=8, patch_size=4, n_channels=2, patch_order="raster")
    return ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=64, modalities=[image],
                       backbone=backbone, modality_tokens=True, text=text)


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Prepared shards whose objects carry a string caption and a numeric redshift label."""
    directory = tmp_path_factory.mktemp("text")
    rng = np.random.default_rng(0)
    records = [
        {"id": f"g{i:03d}", "image": rng.standard_normal((2, 8, 8)).astype(np.float32),
         "labels": {"caption": CAPTIONS[i % 3], "redshift": i / 40}}
        for i in range(20)
    ]
    arrays = {"image": ArraySpec([2, 8, 8])}
    entries = [write_shard(directory, k, records[s : s + 8], arrays) for k, s in enumerate(range(0, 20, 8))]
    finalize(directory, entries, arrays, {"caption": "string", "redshift": "float64"})
    return directory


def _first_batch(shards: Path, config: ModelConfig):
    data = ShardDataset(shards, config, split="all")
    loader = ResumableLoader(data, Collator(config), batch_size=4, shuffle=False)
    batch, ids = next(iter(loader))
    return batch, ids


def test_a_batch_from_the_loader_carries_the_caption_of_each_object(shards):
    batch, ids = _first_batch(shards, _config(TextConfig(column="caption")))
    assert batch[TEXT] == [CAPTIONS[int(i[1:]) % 3] for i in ids]
    assert batch["images"].shape[0] == len(ids) == 4
    assert to_device(batch, "cpu")[TEXT] == batch[TEXT]  # strings pass through unchanged


def test_a_template_renders_a_catalogue_line_from_the_labels(shards):
    batch, ids = _first_batch(shards, _config(TextConfig(template="z {redshift:.3f} : {caption}")))
    assert batch[TEXT] == [f"z {int(i[1:]) / 40:.3f} : {CAPTIONS[int(i[1:]) % 3]}" for i in ids]


def test_a_collator_without_text_and_its_copy_in_a_worker(shards):
    config = _config(TextConfig(column="caption"))
    collate = pickle.loads(pickle.dumps(Collator(config)))  # what a spawned worker gets
    records = ShardDataset(shards, config, split="all").__getitems__([0, 1])
    assert collate(records)[0][TEXT] == [CAPTIONS[0], CAPTIONS[1]]
    # The modalities alone (what embedding uses) carry no text.
    assert TEXT not in Collator(config.modalities)(records)[0]


def test_a_missing_label_is_named_with_the_object(shards):
    config = _config(TextConfig(template="mag {mag_r:.1f}"))
    records = ShardDataset(shards, config, split="all").__getitems__([0])
    with pytest.raises(TokenizationError, match=r"'g000' has no label 'mag_r'"):
        Collator(config)(records)


def test_the_native_backbone_refuses_text_with_a_clear_message():
    with pytest.raises(ConfigError, match="model.text .* needs a language model .* model.backbone: llm"):
        _config(TextConfig(column="caption"), backbone="native")


@pytest.mark.parametrize("text, message", [
    (dict(column="caption", template="{z}"), "either column or template"),
    (dict(template="z {}"), "every field must name a label"),
    (dict(template="z {z"), "not a format string"),
    (dict(column="caption", max_tokens=0), "max_tokens must be positive"),
])
def test_bad_text_configs_are_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        TextConfig(**text)


def test_the_text_counts_in_the_sequence_length():
    config = _config(TextConfig(column="caption", max_tokens=10))
    assert config.sequence_length == 4 + 1 + 10 + 2  # patches, begin, text, begin/end text
    with pytest.raises(ConfigError, match="block_size 16 is smaller"):
        ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=16, modalities=config.modalities,
                    backbone="llm", modality_tokens=True, text=TextConfig(column="caption", max_tokens=10))
