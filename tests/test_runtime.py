"""One answer to "where and how do I run": device, dtype, autocast, rank/world, process group."""

from __future__ import annotations

import pytest
import torch
from fake_records import records_for

from astropt import runtime
from astropt.config import ModalityConfig, ModelConfig
from astropt.data.shards import ArraySpec, finalize, write_shard
from astropt.model.astropt import AstroPT
from astropt.tasks.embed import embed, load_embeddings
from astropt.train import loop


@pytest.mark.parametrize("native_bf16", [True, False])
@pytest.mark.parametrize("width", [16, runtime.BF16_CPU_MIN_WIDTH])
def test_embed_on_a_cuda_less_host_picks_the_training_dtype(native_bf16, width, monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(runtime, "cpu_supports_bf16", lambda: native_bf16)
    config = ModelConfig(n_layer=2, n_head=2, n_embd=width, block_size=16,
                         modalities=[ModalityConfig(image_size=8, patch_size=4, n_channels=2)])
    records = records_for(config, 4)
    arrays = {"image": ArraySpec([2, 8, 8])}
    finalize(tmp_path / "d", [write_shard(tmp_path / "d", 0, records, arrays)], arrays, {"redshift": "float64"})
    out = embed(AstroPT(config), tmp_path / "d", tmp_path / "e.parquet", dtype="auto", progress=False)
    trained = loop.resolve_dtype("auto", runtime.resolve_device("auto"), config.n_embd)
    assert load_embeddings(out).meta["dtype"] == str(trained).removeprefix("torch.")
    wide = width >= runtime.BF16_CPU_MIN_WIDTH  # narrow models stay fp32 on a CPU
    assert trained == (torch.bfloat16 if native_bf16 and wide else torch.float32)


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_dtype_on_cuda_is_bf16_or_fp32_never_fp16(bf16, monkeypatch):
    """Training and inference share one rule; fp16 (narrow range) is only ever asked for."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    want = torch.bfloat16 if bf16 else torch.float32
    assert runtime.resolve_dtype("auto", torch.device("cuda")) == want
    assert loop.resolve_dtype("auto", torch.device("cuda")) == want


def test_named_dtypes_and_a_clear_error():
    assert runtime.resolve_dtype("float16", "cpu") == torch.float16
    assert runtime.resolve_dtype("bfloat16", "cpu") == torch.bfloat16
    with pytest.raises(ValueError, match="float64.*auto, float32, bfloat16, float16"):
        runtime.resolve_dtype("float64", "cpu")


def test_autocast_is_a_no_op_in_fp32():
    with runtime.autocast("cpu", torch.float32):
        y = torch.ones(2, 2, dtype=torch.float32) @ torch.ones(2, 2)
    assert y.dtype == torch.float32
    with runtime.autocast("cpu", torch.bfloat16):
        z = torch.ones(2, 2) @ torch.ones(2, 2)
    assert z.dtype == torch.bfloat16


def test_process_group_setup_is_idempotent_in_one_process(monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    first = runtime.setup("cpu")
    again = runtime.setup("cpu")
    assert (first.rank, first.world_size, first.device) == (again.rank, again.world_size, again.device) == (
        0, 1, torch.device("cpu"))
    assert runtime.rank_world() == (0, 1)
    runtime.teardown()
    runtime.teardown()  # a second teardown is harmless


def test_resolve_device_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="no CUDA device"):
        runtime.resolve_device("cuda")


_FAULTS = """
import resource, sys, torch
from astropt import runtime
said = runtime.tune_cpu_allocator(sys.argv[1])
faults = []
for _ in range(8):  # a step's activation: allocated, written, freed
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(64 << 20, dtype=torch.uint8)
    x.fill_(1)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(said is not None, runtime.allocator_tuned(), *faults)
"""
PAGES = (64 << 20) // 4096


def _page_faults(mode: str, **env: str) -> tuple[bool, bool, list[int]]:
    import os
    import subprocess
    import sys

    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k not in ("LD_PRELOAD", "GLIBC_TUNABLES")}
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode], env={**clean, **env}, capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    return out[0] == "True", out[1] == "True", [int(x) for x in out[2:]]


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="glibc's allocator")
def test_the_tuned_allocator_keeps_a_steps_memory_for_the_next():
    """``train.malloc: auto``: once the heap has grown, a freed 64 MiB buffer is reused by
    the next step instead of being returned to the kernel and faulted in again page by page;
    ``system`` and a user's own ``MALLOC_*`` setting leave glibc as it is."""
    said, tuned, faults = _page_faults("auto")
    assert said and tuned
    assert max(faults[-4:]) < PAGES // 20, faults
    for said_other, tuned_other, faults_other in (_page_faults("system"), _page_faults("auto", MALLOC_ARENA_MAX="4")):
        assert not said_other and not tuned_other
        assert min(faults_other[-4:]) > PAGES // 2, faults_other  # every step faults its pages in again
