"""Generation with the KV cache equals generation without; LoRA trains only adapters + head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from astropt.data.shards import DataError, ShardSet
from astropt.model import load_pretrained
from astropt.tasks.finetune import finetune, label_efficiency
from astropt.tasks.generate import complete_image, generate
from astropt.tasks.map import embedding_map


def test_completion_with_and_without_cache_agree(model_dir, shard_dir):
    model = load_pretrained(model_dir)
    image = ShardSet(shard_dir)[3]["image"]
    cached = complete_image(model, image, keep=0.5, use_cache=True)
    plain = complete_image(model, image, keep=0.5, use_cache=False)
    np.testing.assert_allclose(cached["completed"], plain["completed"], rtol=1e-4, atol=1e-4)
    n_keep = cached["n_keep"]
    assert n_keep == 8 and cached["n_tokens"] == 16
    # The kept part is the original, the generated part is masked in "kept".
    assert np.isnan(cached["kept"]).any() and np.isfinite(cached["kept"]).any()
    finite = np.isfinite(cached["kept"])
    np.testing.assert_allclose(cached["completed"][finite], image[finite], rtol=1e-4, atol=1e-4)


def test_generate_writes_figure_and_rejects_bad_keep(model_dir, shard_dir, tmp_path):
    res = generate(model_dir, shard_dir, keep=0.25, out=tmp_path, object_id="obj0002", temperature=0.1)
    assert res["object"] == "obj0002" and (tmp_path / "completion_obj0002.png").is_file()
    with pytest.raises(ValueError, match="keep"):
        generate(model_dir, shard_dir, keep=1.0)


def test_lora_changes_only_adapters_and_head(model_dir, shard_dir, tmp_path):
    model = load_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = finetune(model, shard_dir, ["redshift", "size"], out=tmp_path, lora_rank=2, epochs=2,
                   batch_size=8, progress=False)
    # peft injected adapters into `model` in place; every original tensor is unchanged.
    after = {k.replace("base_layer.", ""): v for k, v in model.state_dict().items() if "lora_" not in k}
    assert set(after) == set(before)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=0)
    lora = [v for k, v in model.state_dict().items() if "lora_B" in k]
    assert lora and any(v.abs().sum() > 0 for v in lora)  # B starts at zero: it was trained
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "head.safetensors").is_file()
    saved = json.loads((tmp_path / "finetune.json").read_text())
    assert {"r2", "rmse", "nmad"} <= set(saved["metrics"]["redshift"])
    assert res["n_train"] + res["n_val"] + res["n_test"] == 40


def test_full_finetune_classification_and_label_curve(model_dir, shard_dir, tmp_path):
    res = finetune(model_dir, shard_dir, ["kind"], full=True, epochs=1, progress=False)
    assert set(res["metrics"]["kind"]) == {"accuracy", "f1_macro"} and res["classes"] == ["bar", "normal"]
    curve = label_efficiency(model_dir, shard_dir, ["size"], tmp_path, sizes=(5, 100), epochs=1, progress=False)
    assert sorted(curve) == [5, 26]  # capped by the training split
    assert (tmp_path / "label_efficiency.png").is_file()
    with pytest.raises(DataError, match="'const' is constant"):
        finetune(model_dir, shard_dir, ["const"], epochs=1, progress=False)


def test_map_colours_by_label(model_dir, shard_dir, tmp_path):
    from astropt.tasks.embed import embed

    path = embed(model_dir, shard_dir, tmp_path / "e.parquet", progress=False)
    res = embedding_map(path, tmp_path / "map.png", color_by="kind", n_thumbnails=4)
    assert res["n"] == 40 and (tmp_path / "map.png").stat().st_size > 0
    with pytest.raises(DataError, match="no label 'mass'"):
        embedding_map(path, tmp_path / "m2.png", color_by="mass")
