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


class _FakeLibc:
    """glibc as ``tune_cpu_allocator`` sees it: records ``mallopt`` calls."""

    def __init__(self):
        self.calls = []

    def gnu_get_libc_version(self):
        return b"2.36"

    def mallopt(self, param, value):
        self.calls.append((param, value))
        return 1


def _tune(monkeypatch, mode="auto", **env):
    import ctypes

    libc = _FakeLibc()
    monkeypatch.setattr(runtime, "_tuned", None)
    monkeypatch.setattr(ctypes, "CDLL", lambda *a, **k: libc)
    for key in [k for k in __import__("os").environ if k.startswith("MALLOC_") or k in ("LD_PRELOAD", "GLIBC_TUNABLES")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return runtime.tune_cpu_allocator(mode), libc.calls


def test_the_tuned_allocator_keeps_blocks_up_to_32_mib_and_respects_the_users_choice(monkeypatch):
    """``auto``: glibc serves blocks up to 32 MiB (its largest mmap threshold) from the heap
    and trims it only past 1 GiB, so a step's freed activations are reused by the next step;
    larger blocks stay mapped (peak memory as before: benchmarks/RESULTS.md). ``system``, a
    preloaded allocator and the user's own glibc settings are left alone. Done once."""
    said, calls = _tune(monkeypatch)
    assert said and runtime.allocator_tuned()
    assert dict(calls) == {-3: 32 << 20, -1: 1 << 30, -2: 64 << 20}  # M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, M_TOP_PAD
    assert runtime.tune_cpu_allocator() is None  # once per process
    for mode, env in (("system", {}), ("auto", {"MALLOC_ARENA_MAX": "4"}), ("auto", {"GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}),
                      ("auto", {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4"})):
        said, calls = _tune(monkeypatch, mode, **env)
        assert said is None and calls == [] and not runtime.allocator_tuned(), (mode, env)


def test_a_cpu_training_run_tunes_the_allocator_as_configured(monkeypatch):
    """``astropt train`` on a CPU applies ``train.malloc`` when it builds its engine."""
    from astropt.config import DataConfig, RunConfig, TrainConfig

    seen = []
    monkeypatch.setattr(loop, "tune_cpu_allocator", lambda mode: seen.append(mode))
    model = ModelConfig(n_layer=1, n_head=2, n_embd=16, block_size=8,
                        modalities=[ModalityConfig(name="images", kind="image", image_size=8, patch_size=4, n_channels=1)])
    for mode in ("auto", "system"):
        cfg = RunConfig(model=model, data=DataConfig(batch_size=2), train=TrainConfig(dtype="float32", malloc=mode))
        loop.build_engine(cfg, runtime.DistInfo())
    assert seen == ["auto", "system"]
