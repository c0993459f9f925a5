"""Benchmark driver: ``python -m benchmarks.run [--quick] [--vs-reference] [--only a,b]``.

Each measurement runs in its own subprocess (``ours_worker.py``, or ``reference_worker.py``
under the reference's virtual environment), so peaks of memory never mix and both sides are
built and timed by the same code. With ``--vs-reference`` every measurement is paired, ours
and the reference's alternating (A B, then B A, ...), and the ratio of each pair is taken
before the median, so that load from other processes affects both sides alike.

Prints a table and writes ``benchmarks/out/results.json`` (and ``results.md``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from astropt.atomic import atomic_write_text
from benchmarks import common
from benchmarks.refenv import REFERENCE_VERSION, ensure_refenv

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
SECTIONS = ("peak", "train", "configs", "levers", "width", "embed", "ceiling", "floor", "generate", "data", "scaling", "parity", "gpu")
ALLOCATORS = {  # Debian's libjemalloc2 / libtcmalloc-minimal4, preloaded where installed
    "jemalloc": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "tcmalloc": "/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4",
}


class WorkerError(RuntimeError):
    """A benchmark worker failed; the message carries the tail of its output."""


def run_worker(python: str, script: str, spec: dict, timeout: float = 900.0, env: dict | None = None) -> dict:
    """Run one measurement in a fresh process and parse the JSON of its last output line."""
    cmd = [python, str(HERE / script), json.dumps(spec)]
    env = dict(os.environ, PYTHONWARNINGS="ignore", **(env or {}))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=HERE.parent)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0 or not lines:
        raise WorkerError(
            f"{script} {spec['bench']} ({spec.get('shape', {}).get('name', '')}) failed with exit "
            f"code {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    try:
        return json.loads(lines[-1])
    except json.JSONDecodeError as exc:
        raise WorkerError(f"{script}: last output line is not JSON: {lines[-1][:200]!r}") from exc


class Bench:
    """Runs workers for one session: ours always, the reference when asked."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.ours = sys.executable
        self.ref = str(ensure_refenv(OUT / "refenv")) if args.vs_reference else None
        self.rounds = 1 if args.quick else args.rounds
        # Best of n by default: on a shared machine the least disturbed call is the closest
        # to the true cost; the per-pair ratios are then combined by their median.
        self.stat = "min_s" if args.stat == "min" else "median_s"
        self.log: list[dict] = []
        self.env = worker_env(args.omp_wait)

    def one(self, side: str, spec: dict, env: dict | None = None) -> dict:
        python, script = (self.ours, "ours_worker.py") if side == "ours" else (self.ref, "reference_worker.py")
        t0 = time.perf_counter()
        result = run_worker(python, script, spec, env={**self.env, **(env or {})})
        result["side"], result["wall_s"] = side, round(time.perf_counter() - t0, 2)
        if self.stat in result:
            result["time_s"] = result[self.stat]
        self.log.append({"spec": spec, "result": result})
        return result

    def pair(self, spec: dict, ref_spec: dict | None = None, ours_spec: dict | None = None) -> dict:
        """Ours and (if enabled) the reference, alternating over rounds; medians and ratio."""
        ours_spec = ours_spec or spec
        ref_spec = ref_spec or spec
        ours, ref, ratios = [], [], []
        for r in range(self.rounds):
            order = ["ours", "ref"] if r % 2 == 0 else ["ref", "ours"]
            got = {}
            for side in order:
                if side == "ref" and self.ref is None:
                    continue
                got[side] = self.one(side, ours_spec if side == "ours" else ref_spec)
            ours.append(got["ours"])
            if "ref" in got:
                ref.append(got["ref"])
                ratios.append(got["ref"][self.stat] / got["ours"][self.stat])
        return {
            "ours": summarise(ours, self.stat),
            "ref": summarise(ref, self.stat) if ref else None,
            "speedup": statistics.median(ratios) if ratios else None,
            "speedups": ratios,
        }


def worker_env(omp_wait: str) -> dict:
    """Environment of both sides' workers.

    On a CPU shared with other jobs, OpenMP threads that spin at barriers while a sibling
    thread is descheduled make every parallel op wait for a time slice: we measured the
    training step 2-3x and the data path 10x slower with 2 spinning threads on a loaded
    2-core machine. ``auto`` makes idle threads sleep (``OMP_WAIT_POLICY=PASSIVE``) when
    the 1-minute load already exceeds half the cores; both sides get the same setting.
    """
    if omp_wait == "auto":
        busy = (common.load() or [0.0])[0] > 0.5 * (os.cpu_count() or 1)
        omp_wait = "passive" if busy else "default"
    if omp_wait == "default":
        return {}
    return {"OMP_WAIT_POLICY": omp_wait.upper()}


def summarise(results: list[dict], stat: str = "min_s") -> dict:
    """Time over rounds (``time_s``: median of each round's ``stat``), max of the peak RSS,
    and the other fields of the first result."""
    out = dict(results[0])
    out["median_s"] = statistics.median(r["median_s"] for r in results)
    out["min_s"] = min(r["min_s"] for r in results)
    out["time_s"] = statistics.median(r[stat] for r in results)
    out["peak_rss_mb"] = max(r["peak_rss_mb"] for r in results)
    out["rounds"] = len(results)
    out.pop("times", None)
    return out


# ----------------------------------------------------------------------------- sections


def reps(args: argparse.Namespace, full: int, quick: int) -> int:
    return quick if args.quick else full


def section_peak(b: Bench) -> dict:
    repeats = reps(b.args, 8, 3)
    return {d: b.one("ours", {"bench": "peak", "dtype": d, "repeats": repeats}) for d in ("float32", "bfloat16")}


def section_train(b: Bench) -> dict:
    out = {}
    for name in ("tiny-cpu", "24M"):
        for dtype in ("float32", "bfloat16"):
            spec = {
                "bench": "train",
                "shape": common.SHAPES[name].to_json(),
                "dtype": dtype,
                "warmup": 1 if name == "24M" else 3,
                "repeats": reps(b.args, 4, 2) if name == "24M" else reps(b.args, 10, 5),
                "min_time": 0.0 if name == "24M" else 1.0,
            }
            out[f"{name}/{dtype}"] = b.pair(spec)
    return out


def section_configs(b: Bench) -> dict:
    """The shipped configs as ``astropt train --config`` runs them (their batch size, their
    sequence length, ``dtype: auto`` and the default mixed precision), ours only; the 20m
    config at ``grad_accum 1`` (its 10 micro-batches per step would take minutes each)."""
    out = {}
    # The batches are random tokens of the tokeniser's width, so flux_scale (auto: measured
    # from prepared shards) only needs a number here.
    for name, dtypes, overrides in (("tiny-cpu", ("auto", "float32", "bfloat16"), ["model.modalities.0.flux_scale=0.002"]),
                                    ("astropt-20m", ("auto", "float32"), ["train.grad_accum=1"])):
        for dtype in dtypes:
            spec = {"bench": "train", "config": name, "overrides": overrides, "dtype": dtype,
                    "warmup": 2 if name == "tiny-cpu" else 1, "repeats": reps(b.args, 8, 3) if name == "tiny-cpu" else 2}
            runs = [b.one("ours", spec) for _ in range(1 if b.args.quick else b.rounds)]
            out[f"{name}/{dtype}"] = {"ours": summarise(runs, b.stat), "ref": None, "speedup": None}
    return out


SDPA = {"attention": "sdpa"}  # torch's fused attention backward, as before the recompute kernel
LEVERS = {  # one change each from the bf16 step before (per-op autocast, SDPA), 24M harness shape
    "autocast (before)": {"mixed_precision": "autocast", **SDPA},
    "cast_once (SDPA)": {"mixed_precision": "cast_once", **SDPA},
    "autocast+compile": {"mixed_precision": "autocast", "compile": True, **SDPA},
    "cast_once+compile": {"mixed_precision": "cast_once", "compile": True, **SDPA},
    "cast_once+sdpa math": {"mixed_precision": "cast_once", "sdpa": "math", **SDPA},
    "cast_once+foreach AdamW": {"mixed_precision": "cast_once", "fused": False, **SDPA},
    "cast_once, batch 32": {"mixed_precision": "cast_once", "batch": 32, **SDPA},
    "cast_once, batch 8 x accum 4": {"mixed_precision": "cast_once", "grad_accum": 4, **SDPA},
    "cast_once+jemalloc": {"mixed_precision": "cast_once", "allocator": "jemalloc", **SDPA},
    "cast_once+tcmalloc": {"mixed_precision": "cast_once", "allocator": "tcmalloc", **SDPA},
    "cast_once, OMP_WAIT_POLICY=PASSIVE": {"mixed_precision": "cast_once", "env": {"OMP_WAIT_POLICY": "PASSIVE"}, **SDPA},
    "cast_once+recompute attention (default)": {"mixed_precision": "cast_once", "attention": "recompute"},
    "all: cast_once+compile+tcmalloc": {"mixed_precision": "cast_once", "compile": True, "allocator": "tcmalloc", **SDPA},
    "all, batch 32": {"mixed_precision": "cast_once", "compile": True, "allocator": "tcmalloc", "batch": 32, **SDPA},
    "cast_once+compile+recompute": {"mixed_precision": "cast_once", "compile": True, "attention": "recompute"},
    "all+recompute: cast_once+compile+tcmalloc": {"mixed_precision": "cast_once", "compile": True,
                                                  "allocator": "tcmalloc", "attention": "recompute"},
    "all+recompute, batch 32": {"mixed_precision": "cast_once", "compile": True, "allocator": "tcmalloc",
                                "attention": "recompute", "batch": 32},
    "cast_once+recompute+tcmalloc": {"mixed_precision": "cast_once", "attention": "recompute", "allocator": "tcmalloc"},
    "cast_once+recompute+tcmalloc, batch 32": {"mixed_precision": "cast_once", "attention": "recompute",
                                               "allocator": "tcmalloc", "batch": 32},
    # the allocator (train.malloc): every row above runs its default, auto
    "default, malloc system": {"malloc": "system"},
    "default (malloc auto)": {},
    "default+tcmalloc": {"allocator": "tcmalloc"},
}


def section_levers(b: Bench) -> dict:
    """Each lever alone, ours only, bf16; the order is reversed every round so that drift in
    the machine's speed does not favour one lever."""
    rounds = 1 if b.args.quick else b.rounds
    names = [n for n in LEVERS if not b.args.lever or any(part in n for part in b.args.lever)]
    got: dict[str, list[dict]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            lever = dict(LEVERS[name])
            allocator = lever.pop("allocator", None)
            env = dict(lever.pop("env", {}))
            if allocator and not Path(ALLOCATORS[allocator]).exists():
                continue
            shape = common.SHAPES["24M"].to_json()
            shape["batch"] = lever.pop("batch", shape["batch"])
            spec = {"bench": "train", "shape": shape, "dtype": "bfloat16", "warmup": 3 if lever.get("compile") else 2,
                    "repeats": reps(b.args, 6, 3), **lever}
            if allocator:
                env["LD_PRELOAD"] = ALLOCATORS[allocator]
            result = b.one("ours", spec, env)
            result["lever"], result["env"] = name, {**b.env, **env}
            got[name].append(result)
    return {n: summarise(v, b.stat) for n, v in got.items() if v}


def section_width(b: Bench) -> dict:
    """fp32 against bf16 (the default mixed precision) by model width, at the tiny-cpu
    layout (4 blocks, 64 tokens of 8x8x4, batch 32): where ``dtype: auto`` switches."""
    out = {}
    for width in (96, 192, 256, 384, 512):
        shape = common.Shape(f"w{width}", 4, 4, width, 64, 32, patch=8, channels=4).to_json()
        base = {"bench": "train", "shape": shape, "warmup": 2, "repeats": reps(b.args, 8, 3)}
        rows = {}
        for r in range(1 if b.args.quick else b.rounds):
            for dtype in ("float32", "bfloat16") if r % 2 == 0 else ("bfloat16", "float32"):
                rows.setdefault(dtype, []).append(b.one("ours", dict(base, dtype=dtype)))
        fp32, bf16 = summarise(rows["float32"], b.stat), summarise(rows["bfloat16"], b.stat)
        out[str(width)] = {"float32": fp32, "bfloat16": bf16, "bf16_speedup": fp32["time_s"] / bf16["time_s"]}
    return out


def section_embed(b: Bench) -> dict:
    out = {}
    for name in ("tiny-cpu", "24M"):
        for dtype in ("float32", "bfloat16"):
            spec = {
                "bench": "embed",
                "shape": common.SHAPES[name].to_json(),
                "dtype": dtype,
                "batch": 32,
                "warmup": 1,
                "repeats": reps(b.args, 5, 2),
                "min_time": 1.0,
            }
            out[f"{name}/{dtype}"] = b.pair(spec)
    # torch.compile of the embedding (ours only: the reference has no such path)
    spec = {"bench": "embed", "shape": common.SHAPES["24M"].to_json(), "dtype": "bfloat16", "batch": 32,
            "warmup": 2, "repeats": reps(b.args, 5, 2), "min_time": 1.0, "compile": True}
    out["24M/bfloat16+compile"] = {"ours": b.one("ours", spec), "ref": None, "speedup": None}
    return out


def section_ceiling(b: Bench) -> dict:
    """The 24M model's own matrix products alone, in bf16 at its shapes: the ceiling of the
    MFU of its embedding (forward, batch 32) and of its training step (forward and backward,
    batch 8 and 32), against which the MFU targets can be judged."""
    out = {}
    for mode, batch in (("embed", 32), ("train", 8), ("train", 32)):
        for layouts in (True, False) if mode == "train" else (True,):
            spec = {"bench": "gemms", "shape": common.SHAPES["24M"].to_json(), "dtype": "bfloat16", "mode": mode,
                    "batch": batch, "warmup": 2, "repeats": reps(b.args, 7, 2), "min_time": 1.0, "layouts": layouts}
            runs = [b.one("ours", spec) for _ in range(b.rounds)]
            key = f"24M/{mode}/batch {batch}" + ("" if layouts else " (contiguous operands)")
            out[key] = {**min(runs, key=lambda r: r["time_s"]), "rounds": len(runs)}
    return out


# The MFU targets the floor is judged against (issue texts: training >= 50%, embedding >= 70%).
FLOOR_TARGETS = {"embed": 0.70, "train": 0.50}


def section_floor(b: Bench) -> dict:
    """Every kernel of the 24M model's bf16 embedding (batch 32) and training step (the
    harness's batch 8, and 32) timed alone and summed: the fastest step these kernels allow,
    and so the highest MFU, had nothing else to run between them (best of the rounds)."""
    out = {}
    for mode, batch in (("embed", 32), ("train", 8), ("train", 32)):
        spec = {"bench": "floor", "shape": common.SHAPES["24M"].to_json(), "dtype": "bfloat16", "mode": mode,
                "batch": batch, "warmup": 2, "repeats": reps(b.args, 5, 2)}
        runs = [b.one("ours", spec) for _ in range(b.rounds)]
        best = min(runs, key=lambda r: r["floor_s"])
        out[f"24M/{mode}/batch {batch}"] = {**best, "time_s": best["floor_s"], "target_mfu": FLOOR_TARGETS[mode],
                                            "rounds": len(runs)}
    return out


def section_generate(b: Bench, dtype: str) -> dict:
    """64 new tokens from 64 given, one object, at the default dtype (and fp32), with the
    memory read bandwidth measured in the same run: the per-token limit is the bytes of
    weights read per token / bandwidth."""
    out = {"bandwidth": b.one("ours", {"bench": "bandwidth", "repeats": 8})}
    for name in dict.fromkeys((dtype, "float32")):
        base = {"bench": "generate", "shape": common.SHAPES["24M"].to_json(), "dtype": name}
        base.update(n_given=64, n_new=64, warmup=1, repeats=reps(b.args, 3, 1))
        out[f"kv_cache/{name}"] = b.pair(dict(base, use_cache=True))
        if name == "float32" and not b.args.quick:
            out[f"no_cache/{name}"] = b.pair(dict(base, use_cache=False))
    again = b.one("ours", {"bench": "bandwidth", "repeats": 8})
    if again["bytes_per_s"] > out["bandwidth"]["bytes_per_s"]:
        out["bandwidth"] = again
    return out


def section_data(b: Bench) -> dict:
    out = {}
    for name, n_objects in (("tiny-cpu", 512), ("24M", 64)):
        spec = {
            "bench": "data",
            "shape": common.SHAPES[name].to_json(),
            "data_dir": str(OUT / "data"),
            "n_objects": n_objects,
            "warmup": 1,
            "repeats": reps(b.args, 3, 1),
        }
        out[name] = {"ours": b.one("ours", spec)}
    return out


def section_scaling(b: Bench, dtype: str) -> dict:
    seqs = (64, 256, 1024) if b.args.quick else (64, 128, 256, 512, 1024)
    sizes = ("1M", "5M", "24M") if b.args.quick else ("1M", "5M", "24M", "95M")
    out = {}
    for seq in seqs:
        shape = common.Shape(f"24M-T{seq}", 6, 8, 512, seq, batch=1)
        spec = {"bench": "train", "shape": shape.to_json(), "dtype": dtype, "warmup": 1, "repeats": reps(b.args, 3, 1)}
        out[f"seq/{seq}"] = b.pair(spec)
    for name in sizes:
        shape = common.SHAPES[name]
        shape = common.Shape(shape.name, shape.n_layer, shape.n_head, shape.n_embd, 256, batch=1 if name == "95M" else 2)
        spec = {"bench": "train", "shape": shape.to_json(), "dtype": dtype, "warmup": 1, "repeats": reps(b.args, 3, 1)}
        out[f"size/{name}"] = b.pair(spec)
    return out


def section_parity(b: Bench) -> dict | None:
    if b.ref is None:
        return None
    path = str(OUT / "parity_state.pt")
    spec = {"bench": "parity", "shape": common.SHAPES["24M"].to_json(), "state_path": path}
    b.one("ref", spec)
    return b.one("ours", spec)


def section_gpu(b: Bench) -> dict | None:
    """95M, bf16 + torch.compile on a CUDA device, when there is one (never in CI)."""
    import torch

    if not torch.cuda.is_available():
        return None
    shape = common.Shape("95M", 12, 12, 768, 256, batch=8).to_json()
    out = {}
    for compiled in (False, True):
        spec = {"bench": "train", "shape": shape, "dtype": "bfloat16", "device": "cuda", "compile": compiled}
        spec.update(warmup=3 if compiled else 2, repeats=10)
        out[f"compile={compiled}"] = b.one("ours", spec)
    out["peak"] = b.one("ours", {"bench": "peak", "dtype": "bfloat16", "device": "cuda", "repeats": 10})
    return out


# ----------------------------------------------------------------------------- report


def machine() -> dict:
    import torch

    cpu = ""
    flags = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and not cpu:
                cpu = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = line
    except OSError:
        pass
    return {
        "cpu": cpu or platform.processor(),
        "cores": os.cpu_count(),
        "bf16_hw": [f for f in ("avx512_bf16", "amx_bf16") if f in flags.split()],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and sizes (~3 min)")
    parser.add_argument("--vs-reference", action="store_true", help=f"also run the reference astropt {REFERENCE_VERSION}")
    parser.add_argument("--only", default="", help=f"comma-separated sections of {','.join(SECTIONS)}")
    parser.add_argument("--rounds", type=int, default=2, help="alternating ours/reference rounds (full mode)")
    parser.add_argument("--lever", action="append", help="levers section: only the levers whose name contains this")
    parser.add_argument("--stat", choices=("min", "median"), default="min", help="per-measurement statistic")
    parser.add_argument(
        "--omp-wait",
        choices=("auto", "default", "active", "passive"),
        default="auto",
        help="OpenMP wait policy of both sides (auto: passive when the machine is already busy)",
    )
    parser.add_argument("--out", default=str(OUT / "results.json"), help="where to write the JSON")
    args = parser.parse_args(argv)
    only = [s for s in args.only.split(",") if s] or list(SECTIONS)
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {list(SECTIONS)}")

    from benchmarks.report import render, write_json

    OUT.mkdir(parents=True, exist_ok=True)
    b = Bench(args)
    started = time.perf_counter()
    results: dict = {"machine": machine(), "quick": args.quick, "stat": args.stat, "reference": REFERENCE_VERSION if b.ref else None}
    default_dtype = "bfloat16" if results["machine"]["bf16_hw"] else "float32"
    results["default_dtype"] = default_dtype
    results["load_start"] = common.load()
    results["worker_env"] = b.env
    runners = {
        "peak": lambda: section_peak(b),
        "train": lambda: section_train(b),
        "configs": lambda: section_configs(b),
        "levers": lambda: section_levers(b),
        "width": lambda: section_width(b),
        "embed": lambda: section_embed(b),
        "ceiling": lambda: section_ceiling(b),
        "floor": lambda: section_floor(b),
        "generate": lambda: section_generate(b, default_dtype),
        "data": lambda: section_data(b),
        "scaling": lambda: section_scaling(b, default_dtype),
        "parity": lambda: section_parity(b),
        "gpu": lambda: section_gpu(b),
    }
    for name in SECTIONS:
        if name in only:
            t0 = time.perf_counter()
            results[name] = runners[name]()
            print(f"[{name}] done in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    if "peak" in only and len(only) > 1:
        # Measure the peak again at the end and keep the best: the machine's load may have
        # changed while we measured, and MFU must not be inflated by a depressed peak.
        again = section_peak(b)
        for dtype, value in again.items():
            if value["flops"] > results["peak"][dtype]["flops"]:
                results["peak"][dtype] = value
    results["load_end"] = common.load()
    results["wall_s"] = round(time.perf_counter() - started, 1)
    results["runs"] = b.log
    text = render(results)
    print(text)
    write_json(Path(args.out), results)
    atomic_write_text(Path(args.out).with_suffix(".md"), text + "\n")
    return results


if __name__ == "__main__":
    main()
