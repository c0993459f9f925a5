"""A partitioned embeddings dataset (a folder of parts + manifest, no merge) that standard
readers open directly; float16 storage; the tasks read it like a single file."""

import json

import numpy as np
import pyarrow.dataset as ds
import pytest

from astropt.errors import DataError
from astropt.tasks.embed import embed, load_embeddings
from astropt.tasks.search import search


def test_partitioned_output_equals_the_merged_file(model_dir, shard_dir, tmp_path):
    kw = dict(part_size=8, dtype="float32", device="cpu", progress=False)
    merged = load_embeddings(embed(model_dir, shard_dir, tmp_path / "one.parquet", **kw))
    folder = embed(model_dir, shard_dir, tmp_path / "survey", **kw)
    parts = sorted(p.name for p in folder.glob("part-*.parquet"))
    assert len(parts) == 5 and (folder / "_manifest.json").is_file()
    manifest = json.loads((folder / "_manifest.json").read_text())
    assert manifest["n_rows"] == 40 and manifest["precision"] == "float32"
    assert manifest["source"] == str(model_dir) and manifest["layer"] == merged.meta["layer"]
    again = load_embeddings(folder)
    assert again.ids == merged.ids
    np.testing.assert_array_equal(again.matrix(), merged.matrix())
    # standard readers open the folder as it is (the manifest's leading "_" is skipped)
    table = ds.dataset(str(folder), format="parquet").to_table()
    assert table.num_rows == 40 and set(table.column("id").to_pylist()) == set(merged.ids)
    import datasets

    hf = datasets.load_dataset("parquet", data_files=str(folder / "part-*.parquet"), split="train")
    assert len(hf) == 40
    # tasks read it like a file
    assert search(folder, merged.ids[3], k=3, index="flat")[0]["id"] == merged.ids[3]


def test_float16_storage(model_dir, shard_dir, tmp_path):
    kw = dict(part_size=16, dtype="float32", device="cpu", progress=False)
    full = load_embeddings(embed(model_dir, shard_dir, tmp_path / "f32.parquet", **kw))
    half = load_embeddings(embed(model_dir, shard_dir, tmp_path / "f16", precision="float16", **kw))
    assert half.matrix().dtype == np.float32
    np.testing.assert_array_equal(half.matrix(), full.matrix().astype(np.float16).astype(np.float32))
    with pytest.raises(ValueError, match="precision"):
        embed(model_dir, shard_dir, tmp_path / "x", precision="int8", **kw)


def test_unfinished_or_damaged_folder_is_named(model_dir, shard_dir, tmp_path):
    folder = embed(model_dir, shard_dir, tmp_path / "survey", part_size=8, dtype="float32", device="cpu",
                   progress=False)
    (folder / "part-000002.parquet").unlink()
    with pytest.raises(DataError, match="part"):
        load_embeddings(folder)
    (folder / "_manifest.json").unlink()
    with pytest.raises(DataError, match="unfinished"):
        load_embeddings(folder)
    # rerunning the same command finishes it
    embed(model_dir, shard_dir, folder, part_size=8, dtype="float32", device="cpu", progress=False)
    assert len(load_embeddings(folder).ids) == 40


def test_bf16_embedding_casts_the_weights_once_and_stays_close_to_fp32(model_dir, shard_dir, tmp_path):
    from astropt.model import load_pretrained

    kw = dict(part_size=64, device="cpu", progress=False)
    full = load_embeddings(embed(model_dir, shard_dir, tmp_path / "f32.parquet", dtype="float32", **kw))
    model = load_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    half = load_embeddings(embed(model, shard_dir, tmp_path / "bf16.parquet", dtype="bfloat16", **kw))
    assert half.meta["dtype"] == "bfloat16"
    # the caller's model is untouched (the bf16 weights are a copy)
    assert all(v.dtype == before[k].dtype and v.equal(before[k]) for k, v in model.state_dict().items())
    a, b = full.matrix(), half.matrix()
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99, cos.min()


def test_compiled_embedding_equals_eager_and_is_not_mixed_on_resume(model_dir, shard_dir, tmp_path, caplog):
    """``compile`` (the blocks through torch.compile) gives the eager vectors (fp32: to
    float rounding), leaves the caller's model uncompiled, and is part of the job's
    provenance: unfinished parts of an eager job are not completed by a compiled one."""
    import logging

    from astropt.model import load_pretrained
    from astropt.tasks import embed as embed_module

    kw = dict(part_size=8, dtype="float32", device="cpu", progress=False)
    eager = load_embeddings(embed(model_dir, shard_dir, tmp_path / "eager.parquet", **kw))
    model = load_pretrained(model_dir)
    out = tmp_path / "compiled"
    embed(model, shard_dir, out, compile=True, **kw)
    assert not any(hasattr(b, "_compiled_call_impl") and b._compiled_call_impl for b in model.blocks)
    compiled = load_embeddings(out)
    assert compiled.meta["compile"] is True and eager.meta["compile"] is False
    np.testing.assert_allclose(compiled.matrix(), eager.matrix(), rtol=1e-4, atol=1e-5)
    job = json.loads((out / embed_module.JOB_NAME).read_text())
    assert job["compile"] is True
    # an unfinished eager job in the folder is started over, not completed, by a compiled run
    (out / embed_module.JOB_NAME).write_text(json.dumps({**job, "compile": False}))
    (out / "_manifest.json").unlink()
    with caplog.at_level(logging.WARNING):
        embed(model, shard_dir, out, compile=True, **kw)
    assert "compile" in caplog.text and "starting over" in caplog.text


def test_compile_by_default_for_large_bf16_gpu_jobs_only():
    import torch

    from astropt.config import COMPILE_MIN_OBJECTS
    from astropt.tasks.embed import resolve_compile

    bf16, fp32 = torch.bfloat16, torch.float32
    assert resolve_compile(None, COMPILE_MIN_OBJECTS, "cuda:0", bf16)
    assert not resolve_compile(None, COMPILE_MIN_OBJECTS - 1, "cuda:0", bf16)
    assert not resolve_compile(None, COMPILE_MIN_OBJECTS, "cuda:0", fp32)
    assert not resolve_compile(None, None, "cuda:0", bf16)  # a stream: only when asked
    assert not resolve_compile(None, 10**9, "cpu", bf16)  # a CPU: only when asked
    assert resolve_compile(True, 10, "cpu", fp32) and not resolve_compile(False, 10**9, "cuda:0", bf16)
