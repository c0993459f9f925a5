"""The benchmark harness's own logic: FLOP counts, timing helpers, pairing and the report.

No worker subprocess is started here (benchmarks are not tests); the workers' parsing is
exercised on a fake one-line script instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import common, report, run  # noqa: E402


def test_flops_follow_the_palm_count():
    # 6 N per token plus 12 L C T for attention; forward is a third of it.
    n, layers, width, seq = 1000, 2, 8, 16
    assert common.train_flops_per_token(n, layers, width, seq) == 6 * n + 12 * layers * width * seq
    assert common.forward_flops_per_token(n, layers, width, seq) * 3 == pytest.approx(
        common.train_flops_per_token(n, layers, width, seq)
    )


def test_timed_keeps_going_until_min_time():
    calls = []
    times = common.timed(lambda: calls.append(1), warmup=2, repeats=3, min_time=10.0)
    # Fast calls never reach 10 s: capped at 4x the repeats, warm-up calls not timed.
    assert len(times) == 12 and len(calls) == 14
    s = common.stats(times)
    assert s["min_s"] <= s["median_s"]


def test_run_worker_reads_the_last_line_and_reports_failures(tmp_path, monkeypatch):
    script = tmp_path / "fake_worker.py"
    script.write_text("import sys\nprint('number of parameters: 1M')\nprint('{\"min_s\": 2.0}')\n")
    monkeypatch.setattr(run, "HERE", tmp_path)
    assert run.run_worker(sys.executable, script.name, {"bench": "x"}) == {"min_s": 2.0}
    script.write_text("raise SystemExit('boom')\n")
    with pytest.raises(run.WorkerError, match="boom"):
        run.run_worker(sys.executable, script.name, {"bench": "x"})


def test_worker_env_policies(monkeypatch):
    assert run.worker_env("default") == {}
    assert run.worker_env("passive") == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setattr(common, "load", lambda: [1000.0, 0.0, 0.0])
    assert run.worker_env("auto") == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setattr(common, "load", lambda: [0.0, 0.0, 0.0])
    assert run.worker_env("auto") == {}


def _result(seconds: float, **extra) -> dict:
    return {"min_s": seconds, "median_s": seconds, "time_s": seconds, "peak_rss_mb": 100.0, **extra}


def test_report_ratios_and_mfu():
    train = {"tokens_per_step": 1000, "n_params": 2e6, "flops_per_step": 1e12}
    results = {
        "machine": {"cpu": "x", "cores": 2, "bf16_hw": [], "torch": "t", "threads": 2, "date": "d"},
        "reference": "2.0.9",
        "default_dtype": "float32",
        "quick": True,
        "peak": {"float32": {"flops": 1e12}},
        "train": {
            "24M/float32": {
                "ours": _result(2.0, **train),
                "ref": _result(5.0, **train),
                "speedup": 2.5,
            }
        },
    }
    text = report.render(results)
    # 1e12 FLOP in 2 s on a 1e12 FLOP/s peak: 50 % MFU; the reference at 5 s: 20 %.
    row = next(line for line in text.splitlines() if line.startswith("| 24M/float32"))
    assert "500" in row and "200" in row and "2.50x" in row and "50%" in row and "20%" in row
    assert "vs reference fp32: 2.50x" in text
    json.dumps(results)  # the results stay JSON-serialisable


def test_report_levers_width_and_generation_limit():
    machine = {"cpu": "x", "cores": 2, "bf16_hw": ["amx_bf16"], "torch": "t", "threads": 2, "date": "d"}
    step = {"tokens_per_step": 1000, "flops_per_step": 1e12, "batch": 8, "seq": 125, "grad_accum": 1,
            "warmup": 2, "repeats": 6}
    results = {
        "machine": machine, "reference": None, "default_dtype": "bfloat16", "quick": True,
        "peak": {"bfloat16": {"flops": 1e12}},
        "levers": {"autocast (before)": _result(4.0, **step), "cast_once": _result(2.0, **step)},
        "width": {"96": {"float32": _result(1.0, **step), "bfloat16": _result(2.0, **step), "bf16_speedup": 0.5}},
        "generate": {"bandwidth": {"bytes_per_s": 1e10},
                     "kv_cache/bfloat16": {"ours": _result(1.28, n_new=64, weight_bytes=1e8), "ref": None, "speedup": None}},
    }
    lines = report.render(results).splitlines()
    lever = next(line for line in lines if line.startswith("| cast_once |"))
    # Twice the tokens/s of the first (baseline) row, 50% MFU (1e12 FLOP in 2 s on 1e12 FLOP/s).
    assert "2.00x" in lever and "50%" in lever and "8 x 125, w2, n6" in lever
    assert "0.50x" in next(line for line in lines if line.startswith("| 96 |"))
    gen = next(line for line in lines if line.startswith("| kv_cache/bfloat16"))
    # 1.28 s / 64 tokens = 20 ms per token; limit 1e8 B / 1e10 B/s = 10 ms: 2x the limit.
    assert "| 20.00 | 10.00 | 2.00x |" in gen


def test_the_gemm_ceiling_runs_the_models_own_products():
    """The ceiling's products are the embedding's matmul FLOPs (forward, blocks up to the
    embedding layer) and 3x the whole model's for a training step."""
    from benchmarks import ours_worker

    shape = common.SHAPES["tiny-cpu"]
    model, _ = ours_worker.build({"shape": shape.to_json()})
    rows = 2 * shape.n_tokens
    embed = ours_worker.model_gemms(model, rows, "embed")
    attention_scores = 4.0 * (model.config.default_embed_layer + 1) * shape.n_embd * shape.n_tokens
    per_token = ours_worker.embed_flops_per_token(model, shape) - attention_scores
    assert sum(2 * m * k * n for m, k, n, _ in embed) == pytest.approx(rows * per_token)
    assert {layout for *_, layout in embed} == {"NT"}
    train = ours_worker.model_gemms(model, rows, "train")
    # forward and backward of every Linear weight, decoders included: the 6 N of the
    # training FLOP count (whose N also holds the few norm weights)
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert sum(2 * m * k * n for m, k, n, _ in train) == pytest.approx(3 * 2 * rows * linear)
    assert linear == pytest.approx(ours_worker.matmul_params(model), rel=0.01)
    assert [layout for *_, layout in train[:3]] == ["NT", "NN", "TN"]
    result = ours_worker.bench_gemms({"shape": shape.to_json(), "dtype": "float32", "mode": "embed",
                                      "batch": 2, "warmup": 0, "repeats": 1})
    assert result["n_gemms"] == len(embed) and result["rows"] == rows and result["layouts"] == "autograd's"


@pytest.mark.parametrize("mode", ["embed", "train"])
def test_the_floor_sums_every_kernel_class_of_the_step(mode):
    """The floor times each op class of the step alone, sums them, and counts the step's
    FLOPs as the embed and train benchmarks do (so their MFUs compare)."""
    from benchmarks import ours_worker

    shape = common.SHAPES["tiny-cpu"]
    spec = {"shape": shape.to_json(), "dtype": "bfloat16", "mode": mode, "batch": 2, "warmup": 0, "repeats": 1}
    result = ours_worker.bench_floor(spec)
    expected = {"matmul", "attention", "norms and GELU", "other"} | ({"casts", "optimizer"} if mode == "train" else set())
    assert set(result["classes_s"]) == expected
    assert all(t > 0 for t in result["classes_s"].values())
    assert result["floor_s"] == pytest.approx(sum(result["classes_s"].values()))
    model, _ = ours_worker.build(spec)
    rows = 2 * shape.n_tokens
    if mode == "train":
        per_token = common.train_flops_per_token(ours_worker.matmul_params(model), shape.n_layer, shape.n_embd,
                                                 shape.n_tokens)
    else:
        per_token = ours_worker.embed_flops_per_token(model, shape)
    assert result["flops_per_step"] == pytest.approx(rows * per_token)


def test_report_sets_the_floor_beside_the_target_and_the_measured_step():
    floor = {"classes_s": {"matmul": 0.6, "attention": 0.2, "norms and GELU": 0.1, "other": 0.1}, "floor_s": 1.0,
             "time_s": 1.0, "flops_per_step": 4e11, "mode": "embed", "batch": 32, "target_mfu": 0.7}
    measured = {"time_s": 1.25, "flops_per_step": 4e11, "objects_per_step": 32}
    results = {"peak": {"bfloat16": {"flops": 1e12}}, "floor": {"24M/embed/batch 32": floor},
               "embed": {"24M/bfloat16": {"ours": measured, "ref": None, "speedup": None}}}
    line = next(x for x in report._floor_lines(results) if x.startswith("| 24M/embed"))
    # 4e11 FLOP in 1 s of a 1e12 FLOP/s peak: 40%, against 70%; the measured 1.25 s is 32%
    assert "| 600.0 | 200.0 | 100.0 | - | - | 100.0 | 1,000 | 40% | 70% | 1,250 | 32% |" in line
