"""Where a training step's time goes: the torch profiler's self CPU time by op class.

``python benchmarks/profile_step.py [--mixed-precision autocast|cast_once] [--attention
sdpa|recompute] [--compile] [--dtype bfloat16] [--steps 3]`` profiles the 24M harness step (``ours_worker.prepare_train``,
i.e. ``loop.train_step``) after two warm-up steps and prints a Markdown table: matmul,
attention, norms and GELU, casts, optimizer, other (with the three largest ops of "other").
Every op under the ``recompute`` attention backward's profiler range (its matrix products
and compiled kernels) counts as attention.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import ours_worker  # noqa: E402

from astropt.model.attention import PROFILE_RANGE  # noqa: E402

CLASSES = {  # op-name fragments -> class, first match wins
    "attention": ("scaled_dot_product", "flash_attention", "_softmax", "softmax"),
    "matmul": ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "mkldnn", "onednn"),
    "norms and GELU": ("layer_norm", "gelu"),
    "casts": ("aten::copy_", "aten::_to_copy", "aten::to", "_foreach_copy"),
    "optimizer": ("adam", "_foreach_", "clip_grad", "aten::norm"),
}


def op_class(name: str) -> str:
    low = name.lower()
    for cls, fragments in CLASSES.items():
        if any(f.lower() in low for f in fragments):
            return cls
    return "other"


def _under(event, name: str) -> bool:
    """Whether ``event`` is the profiler range ``name`` or runs inside it."""
    while event is not None:
        if event.name == name:
            return True
        event = event.cpu_parent
    return False


def profile_table(spec: dict, steps: int) -> list[str]:
    step, attention, info = ours_worker.prepare_train(spec)
    with attention:
        for _ in range(2):
            step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
    totals: dict[str, float] = {}
    others: dict[str, float] = {}
    for event in prof.events():
        cls = "attention" if _under(event, PROFILE_RANGE) else op_class(event.name)
        totals[cls] = totals.get(cls, 0.0) + event.self_cpu_time_total
        if cls == "other":
            others[event.name] = others.get(event.name, 0.0) + event.self_cpu_time_total
    total = sum(totals.values())
    per_step_ms = total / steps / 1e3
    label = (f"{spec['dtype']}, {info['precision']}, attention {info['attention']}"
             f"{', compiled' if spec.get('compile') else ''}")
    lines = [f"24M step ({info['batch']} x {info['seq']} tokens), {label}: {per_step_ms:.0f} ms of op time per step "
             f"(self CPU, {steps} profiled steps, {torch.get_num_threads()} threads)", "",
             "| op class | ms / step | share |", "|---|---|---|"]
    for cls in (*CLASSES, "other"):
        ms = totals.get(cls, 0.0) / steps / 1e3
        lines.append(f"| {cls} | {ms:.1f} | {100 * totals.get(cls, 0.0) / total:.0f}% |")
    top = sorted(others.items(), key=lambda kv: -kv[1])[:3]
    lines += ["", "Largest of other: " + ", ".join(f"{k} {v / steps / 1e3:.1f} ms" for k, v in top)]
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--mixed-precision", default="auto", choices=("auto", "autocast", "cast_once"))
    parser.add_argument("--attention", default="auto", choices=("auto", "sdpa", "recompute"))
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args(argv)
    spec = {"shape": common.SHAPES["24M"].to_json(), "dtype": args.dtype, "mixed_precision": args.mixed_precision,
            "compile": args.compile, "attention": args.attention}
    sys.stdout.write("\n".join(profile_table(spec, args.steps)) + "\n")


if __name__ == "__main__":
    main()
