"""The shipped llm-tiny config trains, embeds and finetunes through the unchanged CLI."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from astropt.cli import main
from astropt.model.astropt import AstroPT

CONFIG = Path(__file__).parents[2] / "configs" / "llm-tiny.yaml"


def test_train_then_embed_with_the_llm_backbone(shard_dir, tmp_path):
    run = tmp_path / "run"
    overrides = [
        f"data.path={shard_dir}", "data.synth_n=0", "data.batch_size=4", "data.val_fraction=0.2",
        "model.modalities.0.image_size=16", "model.modalities.0.patch_size=4",
        "model.modalities.0.n_channels=2", "model.modalities.0.bands=[]",
        "model.modalities.0.flux_features=false", "model.modalities.0.input_size=0",
        f"train.out_dir={run}", "train.max_steps=5", "train.warmup_steps=1", "train.eval_interval=5",
        "train.eval_batches=1", "train.device=cpu", "train.peak_tflops=1.0", "train.figures=false",
    ]
    assert main(["train", "--config", str(CONFIG), *overrides]) == 0
    model = AstroPT.from_pretrained(run / "final")
    assert model.config.backbone == "llm" and (run / "final" / "llm" / "tokenizer.json").is_file()
    out = tmp_path / "emb.parquet"
    assert main(["embed", str(run / "final"), str(shard_dir), "--out", str(out), "--dtype", "float32"]) == 0
    table = pq.read_table(out)
    assert table.num_rows > 0
    assert len(table.column("embedding")[0]) == 2 * model.config.n_embd  # mean_max pooling
    # finetuning trains the LLM's own LoRA adapters and a head
    ft = tmp_path / "ft"
    assert main(["finetune", str(run / "final"), str(shard_dir), "--target", "width", "--epochs", "1",
                 "--batch-size", "16", "--out", str(ft)]) == 0
    assert (ft / "head.safetensors").is_file()
