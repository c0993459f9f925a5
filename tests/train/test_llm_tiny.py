"""The shipped llm-tiny config trains, embeds and finetunes through the unchanged CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq

from astropt.cli import main
from astropt.model.astropt import AstroPT
from astropt.train.logging import read_metrics

CONFIG = Path(__file__).parents[2] / "configs" / "llm-tiny.yaml"


def tiny_data(shard_dir: Path) -> list[str]:
    """Overrides that fit the shipped LLM configs to the tiny shards (16x16, two bands)."""
    return [
        f"data.path={shard_dir}", "data.synth_n=0", "data.batch_size=4", "data.val_fraction=0.2",
        "model.modalities.0.image_size=16", "model.modalities.0.patch_size=4",
        "model.modalities.0.n_channels=2", "model.modalities.0.bands=[]",
        "model.modalities.0.flux_features=false", "model.modalities.0.input_size=0",
    ]


def test_train_then_embed_with_the_llm_backbone(shard_dir, tmp_path):
    run = tmp_path / "run"
    overrides = [
        *tiny_data(shard_dir),
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


TEXT_CONFIG = CONFIG.with_name("llm-tiny-text.yaml")


def test_training_with_text_lowers_the_loss_and_answers_in_text(shard_dir, tmp_path):
    """llm-tiny-text: a catalogue line per object after its image; the loss goes down, and
    `generate --text` answers after the observations in words of the tokenizer."""
    run = tmp_path / "run"
    overrides = [
        *tiny_data(shard_dir),
        "model.text.template=width {width:.1f}", "model.llm.vocab=[width]",
        f"train.out_dir={run}", "train.max_steps=20", "train.warmup_steps=2", "train.lr=0.005",
        "train.eval_interval=40",
        "train.eval_batches=1", "train.log_interval=1", "train.device=cpu", "train.peak_tflops=1.0",
        "train.figures=false", "train.ckpt_interval=0",
    ]
    assert main(["train", "--config", str(TEXT_CONFIG), *overrides]) == 0
    losses = [r["loss"] for r in read_metrics(run) if "loss" in r]
    assert len(losses) == 20 and sum(losses[-4:]) < 0.9 * sum(losses[:4])
    model = AstroPT.from_pretrained(run / "final")
    assert model.config.text.template == "width {width:.1f}"
    answers = tmp_path / "answers.json"
    assert main(["generate", str(run / "final"), str(shard_dir), "--text", "--prompt", "width",
                 "-n", "4", "--max-new-tokens", "4", "--out", str(answers)]) == 0
    objects = json.loads(answers.read_text())["objects"]
    assert len(objects) == 4 and all(o["text"].startswith("width ") for o in objects)
    assert all(isinstance(o["answer"], str) and "[UNK]" not in o["answer"] for o in objects)
    emb = tmp_path / "emb.parquet"  # embeddings are of the observations alone (no text)
    assert main(["embed", str(run / "final"), str(shard_dir), "--out", str(emb), "--dtype", "float32"]) == 0
    assert pq.read_table(emb).num_rows == 64
