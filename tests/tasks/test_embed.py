"""Embedding: the table holds every id once, matches model.embed, resumes after a kill."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tasks_fixtures import make_records, tiny_config, write_shards

from astropt.data.loader import Collator, rows_to_records
from astropt.data.shards import DataError, ShardSet
from astropt.model import load_pretrained
from astropt.tasks import embed as embed_module
from astropt.tasks.embed import embed, load_embeddings


def test_embeddings_equal_model_embed_and_carry_labels(model_dir, shard_dir, tmp_path):
    out = embed(model_dir, shard_dir, tmp_path / "e.parquet", batch_size=7, part_size=16,
                dtype="float32", progress=False)
    emb = load_embeddings(out)
    data = ShardSet(shard_dir)
    assert emb.ids == data.ids
    np.testing.assert_allclose(emb.labels["redshift"], data.labels()["redshift"])
    assert list(emb.labels["kind"]) == list(data.labels()["kind"])
    model = load_pretrained(model_dir)
    rows = data.get_batch(np.arange(5))
    batch, _ = Collator(model.config)(rows_to_records(rows, data.label_names))
    expected = model.embed(batch)["images"].numpy()
    np.testing.assert_allclose(emb.matrix()[:5], expected, rtol=1e-5, atol=1e-6)
    assert emb.meta["layer"] == model.config.default_embed_layer
    assert not (tmp_path / "e.parquet.parts").exists()


def test_resume_after_kill_gives_each_id_exactly_once(model_dir, shard_dir, tmp_path, monkeypatch):
    out = tmp_path / "e.parquet"
    calls = []

    def killed(k):
        calls.append(k)
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(embed_module, "_part_written", killed)
    with pytest.raises(KeyboardInterrupt):
        embed(model_dir, shard_dir, out, part_size=8, progress=False)
    assert not out.exists()
    assert len(list((tmp_path / "e.parquet.parts").glob("part-*.parquet"))) == 2
    done = []
    monkeypatch.setattr(embed_module, "_part_written", done.append)
    embed(model_dir, shard_dir, out, part_size=8, progress=False)
    assert done == [2, 3, 4]  # finished parts were not recomputed
    ids = load_embeddings(out).ids
    assert sorted(ids) == sorted(ShardSet(shard_dir).ids) and len(set(ids)) == len(ids)


def test_all_layers_columns(model_dir, shard_dir, tmp_path):
    emb = load_embeddings(embed(model_dir, shard_dir, tmp_path / "a.parquet", layer="all", progress=False))
    assert emb.layer_columns == ["embedding_l0", "embedding_l1"]
    last = load_embeddings(embed(model_dir, shard_dir, tmp_path / "l.parquet", layer=1, progress=False))
    np.testing.assert_allclose(emb.matrix("embedding_l1"), last.matrix(), rtol=1e-4, atol=1e-5)


def test_mismatched_data_is_refused_before_work(tmp_path, model_dir):
    three_bands = write_shards(tmp_path / "s3", make_records(8, bands=3))
    with pytest.raises(DataError, match="expects 2 bands.*3 bands"):
        embed(model_dir, three_bands, tmp_path / "x.parquet", progress=False)
    bigger = write_shards(tmp_path / "s32", make_records(8, size=32))
    with pytest.raises(DataError, match="16x16.*32x32"):
        embed(model_dir, bigger, tmp_path / "x.parquet", progress=False)
    assert not (tmp_path / "x.parquet.parts").exists()


def test_missing_modality_is_refused(tmp_path, shard_dir):
    from astropt.config import ModalityConfig
    from astropt.model import AstroPT, save_pretrained

    spec = ModalityConfig(name="spectra", kind="spectrum", patch_size=8, max_tokens=8)
    cfg = tiny_config(modalities=[tiny_config().modalities[0], spec])
    torch.manual_seed(0)
    save_pretrained(AstroPT(cfg), tmp_path / "mm")
    with pytest.raises(DataError, match="spectra"):
        embed(tmp_path / "mm", shard_dir, tmp_path / "x.parquet", progress=False)


def test_cli_embed_probe_search(model_dir, shard_dir, tmp_path, capsys):
    from astropt.cli import main

    out = str(tmp_path / "e.parquet")
    assert main(["embed", str(model_dir), str(shard_dir), "--out", out, "--dtype", "float32"]) == 0
    assert main(["probe", out, "--target", "size", "--out", str(tmp_path / "p")]) == 0
    assert main(["search", out, "--query", "obj0005", "-k", "3", "--out", str(tmp_path / "s.png")]) == 0
    assert "obj0005" in capsys.readouterr().out.splitlines()[-3]
    assert main(["probe", out, "--target", "nope"]) == 2
    assert "no label 'nope'" in capsys.readouterr().err
