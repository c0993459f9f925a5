"""Turn the benchmark results into Markdown tables (throughputs, MFU, ratios to the reference)."""

from __future__ import annotations

import json
from pathlib import Path

from astropt.atomic import atomic_write_text


def write_json(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(results, indent=1))


def _f(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def _ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def _peak(results: dict, dtype: str) -> float | None:
    peak = results.get("peak") or {}
    return peak.get(dtype, {}).get("flops")


def _mfu(side: dict | None, flops_per_step: float | None, peak: float | None) -> str:
    if not side or not flops_per_step or not peak:
        return "-"
    return f"{100 * flops_per_step / side['time_s'] / peak:.0f}%"


def _train_rows(results: dict, section: dict, key_dtype: bool = True) -> list[list[str]]:
    rows = []
    for key, pair in section.items():
        ours, ref = pair["ours"], pair["ref"]
        dtype = key.split("/")[1] if key_dtype else results["default_dtype"]
        flops = ours.get("flops_per_step")
        tokens = ours["tokens_per_step"]
        rows.append(
            [
                key,
                f"{ours['n_params'] / 1e6:.1f}M",
                _f(tokens / ours["time_s"], 0),
                _f(tokens / ref["time_s"], 0) if ref else "-",
                _ratio(pair["speedup"]),
                _mfu(ours, flops, _peak(results, dtype)),
                _mfu(ref, flops, _peak(results, dtype)),
                _f(ours["peak_rss_mb"], 0),
                _f(ref["peak_rss_mb"], 0) if ref else "-",
            ]
        )
    return rows


def _run_shape(side: dict) -> str:
    """``batch x seq [x accum], warm-up w, n timed``: what a row measured."""
    if "batch" not in side:
        return "-"
    accum = f" x {side['grad_accum']}" if side.get("grad_accum", 1) > 1 else ""
    return f"{side['batch']} x {side['seq']}{accum}, w{side.get('warmup', '?')}, n{side.get('repeats', '?')}"


def _config_rows(results: dict) -> list[list[str]]:
    rows = []
    for key, pair in results["configs"].items():
        o = pair["ours"]
        rows.append([key, o.get("dtype_resolved", "-"), o.get("precision", "-"), _run_shape(o),
                     f"{o['n_params'] / 1e6:.1f}M", _f(o["tokens_per_step"] / o["time_s"], 0),
                     _mfu(o, o["flops_per_step"], _peak(results, o.get("dtype_resolved", "float32"))),
                     _f(o["peak_rss_mb"], 0)])
    return rows


def _lever_rows(results: dict) -> list[list[str]]:
    levers = results["levers"]
    base = next(iter(levers.values()))
    rows = []
    for name, o in levers.items():
        rows.append([name, _run_shape(o), _f(o["tokens_per_step"] / o["time_s"], 0),
                     _ratio((base["time_s"] / base["tokens_per_step"]) / (o["time_s"] / o["tokens_per_step"])),
                     _mfu(o, o["flops_per_step"], _peak(results, "bfloat16")), _f(o["peak_rss_mb"], 0)])
    return rows


def _width_rows(results: dict) -> list[list[str]]:
    rows = []
    for width, w in results["width"].items():
        f32, b16 = w["float32"], w["bfloat16"]
        rows.append([width, _f(f32["tokens_per_step"] / f32["time_s"], 0), _f(b16["tokens_per_step"] / b16["time_s"], 0),
                     _ratio(w["bf16_speedup"])])
    return rows


TRAIN_HEADER = ["config/dtype", "params", "ours tok/s", "ref tok/s", "speedup", "ours MFU", "ref MFU", "ours RSS MB", "ref RSS MB"]


def render(results: dict) -> str:
    """All sections present in ``results`` as Markdown."""
    m = results["machine"]
    out = [
        f"Machine: {m['cpu']}, {m['cores']} cores, bf16 hw: {', '.join(m['bf16_hw']) or 'none'}; "
        f"torch {m['torch']} ({m['threads']} threads); {m['date']}",
        f"Reference: astropt {results['reference'] or '(not run)'}; default dtype (auto): "
        f"{results['default_dtype']}; load {results.get('load_start')} -> {results.get('load_end')}; "
        f"quick={results['quick']}; statistic: {results.get('stat', 'min')} per measurement, "
        f"median over alternating rounds; worker env {results.get('worker_env') or '{}'}",
        "",
    ]
    if results.get("peak"):
        out += ["### Peak matmul FLOP/s (measured in this run)", ""]
        rows = [[d, f"{v['flops'] / 1e9:.0f} GFLOP/s"] for d, v in results["peak"].items()]
        out += _table(["dtype", "peak"], rows) + [""]
    if results.get("train"):
        out += ["### Training step (forward + backward + AdamW), tokens/s", ""]
        out += _table(TRAIN_HEADER, _train_rows(results, results["train"])) + [""]
        out += _defaults_line(results) + [""]
    if results.get("configs"):
        out += ["### The shipped configs as `astropt train` runs them (ours), tokens/s", ""]
        out += _table(["config/dtype", "resolved", "precision", "batch x seq, warm-up, timed", "params", "tok/s",
                       "MFU", "RSS MB"], _config_rows(results)) + [""]
    if results.get("levers"):
        out += ["### Levers, one at a time (24M harness shape, bf16), against per-op autocast", ""]
        out += _table(["lever", "batch x seq, warm-up, timed", "tok/s", "vs autocast", "MFU", "RSS MB"],
                      _lever_rows(results)) + [""]
    if results.get("width"):
        out += ["### fp32 or bf16 by model width (4 blocks, 64 tokens, batch 32): the `dtype: auto` rule", ""]
        out += _table(["n_embd", "fp32 tok/s", "bf16 tok/s", "bf16 / fp32"], _width_rows(results)) + [""]
    if results.get("embed"):
        out += ["### Embeddings at the default layer, batch 32, objects/s (MFU: forward FLOPs of the blocks run)", ""]
        rows = []
        for key, pair in results["embed"].items():
            ours, ref = pair["ours"], pair["ref"]
            n = ours["objects_per_step"]
            dtype = key.split("/")[1].split("+")[0]
            rows.append([key, _f(n / ours["time_s"]), _f(n / ref["time_s"]) if ref else "-", _ratio(pair["speedup"]),
                         _mfu(ours, ours.get("flops_per_step"), _peak(results, dtype)),
                         _mfu(ref, ours.get("flops_per_step"), _peak(results, dtype))])
        out += _table(["config/dtype", "ours obj/s", "ref obj/s", "speedup", "ours MFU", "ref MFU"], rows) + [""]
    if results.get("ceiling"):
        out += ["### The ceiling: the 24M model's matrix products alone, bf16, back to back (best of the rounds)", ""]
        rows = [[key, str(r["n_gemms"]), f"{r['rows']:,}", _f(r["flops_per_step"] / r["time_s"] / 1e9, 0),
                 _mfu(r, r["flops_per_step"], _peak(results, "bfloat16"))] for key, r in results["ceiling"].items()]
        out += _table(["model/pass/batch", "products", "rows (tokens)", "GFLOP/s", "of the bf16 peak"], rows) + [""]
    if results.get("floor"):
        out += _floor_lines(results)
    if results.get("generate"):
        gen = results["generate"]
        bw = gen.get("bandwidth", {}).get("bytes_per_s")
        out += [f"### Generation: 64 image tokens from 64 given (24M, batch 1); memory read bandwidth "
                f"{_f(bw / 1e9 if bw else None)} GB/s", ""]
        rows = []
        for key, pair in gen.items():
            if key == "bandwidth" or pair is None:
                continue
            ours, ref = pair["ours"], pair["ref"]
            per_token = ours["time_s"] / ours.get("n_new", 64)
            limit = ours["weight_bytes"] / bw if bw and "weight_bytes" in ours else None
            rows.append([key, _f(ours["time_s"], 3), _f(ref["time_s"], 3) if ref else "-", _ratio(pair["speedup"]),
                         _f(per_token * 1e3, 2), _f(limit * 1e3 if limit else None, 2),
                         _ratio(per_token / limit if limit else None)])
        out += _table(["ours", "ours s", "ref s (no cache)", "speedup", "ms / token", "limit ms / token",
                       "x limit"], rows) + [""]
    if results.get("data"):
        out += ["### Data: prepared shards -> model batches (read, tokenise, collate), 1 process", ""]
        rows = []
        for key, d in results["data"].items():
            o = d["ours"]
            rows.append([key, _f(o["objects_per_step"] / o["time_s"], 0), _f(o["peak_rss_mb"], 0)])
        out += _table(["config", "objects/s", "RSS MB"], rows) + [""]
    if results.get("scaling"):
        out += [f"### Scaling (training step, {results['default_dtype']}): sequence length at 24M width, model size at 256 tokens", ""]
        out += _table(TRAIN_HEADER, _train_rows(results, results["scaling"], key_dtype=False)) + [""]
    if results.get("parity"):
        p = results["parity"]
        out += [
            "### fp32 parity with the reference (same weights, same input, 24M)",
            "",
            f"max |embedding difference| = {p['embed_max_abs_diff']:.2e} (embedding scale "
            f"{p['embed_scale']:.2f}); max |prediction difference| = {p['predict_max_abs_diff']:.2e}",
            "",
        ]
    if results.get("gpu"):
        out += ["### CUDA: 95M, bf16, batch 8 x 256 tokens", ""]
        peak = results["gpu"]["peak"]["flops"]
        rows = []
        for key, r in results["gpu"].items():
            if key == "peak":
                continue
            rows.append([key, _f(r["tokens_per_step"] / r["time_s"], 0), _mfu(r, r["flops_per_step"], peak)])
        out += _table(["variant", "tok/s", "MFU"], rows) + [""]
    return "\n".join(out)


def _defaults_line(results: dict) -> list[str]:
    """Ours at its default dtype against the reference in fp32 (what it runs on a CPU)."""
    train = results["train"]
    lines = []
    for name in ("tiny-cpu", "24M"):
        ours = train.get(f"{name}/{results['default_dtype']}")
        ref = train.get(f"{name}/float32")
        if ours and ref and ref["ref"]:
            ratio = ref["ref"]["time_s"] / ours["ours"]["time_s"]
            lines.append(
                f"- {name}: ours at its default ({results['default_dtype']}) vs reference fp32: "
                f"{ratio:.2f}x tokens/s"
            )
    return lines


def _measured_step(results: dict, mode: str, batch: int) -> dict | None:
    """Our measured bf16 step of the same work in this run, where a section timed it."""
    pair = (results.get(mode) or {}).get("24M/bfloat16")
    if not pair:
        return None
    ours = pair["ours"]
    return ours if ours.get("batch", ours.get("objects_per_step")) == batch else None


def _floor_lines(results: dict) -> list[str]:
    peak = _peak(results, "bfloat16")
    out = ["### The floor: every kernel of the 24M bf16 step timed alone, summed (best of the rounds)", "",
           "Milliseconds per step by op class; the MFU the sum allows beside the target and the measured step.", ""]
    classes = ["matmul", "attention", "norms and GELU", "casts", "optimizer", "other"]
    rows = []
    for key, r in results["floor"].items():
        parts = r["classes_s"]
        measured = _measured_step(results, r["mode"], r["batch"])
        rows.append([key] + [_f(1e3 * parts[c]) if c in parts else "-" for c in classes]
                    + [_f(1e3 * r["floor_s"]), _mfu(r, r["flops_per_step"], peak), f"{100 * r['target_mfu']:.0f}%",
                       _f(1e3 * measured["time_s"]) if measured else "-",
                       _mfu(measured, measured.get("flops_per_step"), peak) if measured else "-"])
    return out + _table(["model/pass/batch", *classes, "floor ms", "floor MFU", "target", "measured ms",
                         "measured MFU"], rows) + [""]
