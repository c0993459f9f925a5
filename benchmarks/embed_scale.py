"""Survey-scale embedding: objects/s at 1 and 2 processes, memory per rank, disk per object,
and what that means for 10^9 objects.

``python -m benchmarks.embed_scale [--n 4096] [--models tiny-cpu,24M,95M] [--procs 1,2]``

Each run is the user's command, ``[torchrun --nproc_per_node=P] astropt embed MODEL DATA
--out DIR`` (a partitioned output), on the built-in synthetic survey (64x64 griz, 8x8
patches: 64 tokens), with a randomly initialised model of each size (throughput does not
depend on the weights). Throughput is marginal: a run on 64 objects measures the start-up
(imports, process group, model loading), which a survey pays once. Peak RSS is sampled per
rank process. Results go to
``benchmarks/out/embed_scale.json`` and a Markdown table on stdout; the extrapolation
states its assumptions next to its figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from astropt.atomic import atomic_write_text

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "embed_scale"
SIZES = {  # overrides of configs/tiny-cpu.yaml: same data and tokeniser, wider and deeper stacks
    "tiny-cpu": [],
    "24M": ["model.n_layer=6", "model.n_head=8", "model.n_embd=512"],
    "95M": ["model.n_layer=12", "model.n_head=12", "model.n_embd=768"],
}
SMALL = 64  # objects of the start-up run
GPU_PEAK_BF16 = 989e12  # H100/H200 SXM dense bf16 tensor-core peak (vendor figure)


def survey(n: int) -> Path:
    from astropt.data.synthetic import synthesize

    data = OUT / f"survey-{n}"
    if not (data / "manifest.json").is_file():
        synthesize(data, n, seed=0, image_size=64, bands="griz")
    return data


def prepare(n: int, models: list[str]) -> tuple[Path, dict[str, Path]]:
    from astropt.config import load_config
    from astropt.model import AstroPT
    from astropt.tasks.demo import find_config

    data = survey(n)
    paths = {}
    for name in models:
        folder = OUT / f"model-{name}"
        if not (folder / "config.json").is_file():
            cfg = load_config(find_config("tiny-cpu"), SIZES[name])
            AstroPT(cfg.model).save_pretrained(folder)
        paths[name] = folder
    return data, paths


class PeakRSS:
    """Samples the resident memory of a process tree; the peak of each process."""

    def __init__(self, pid: int, every: float = 0.2):
        self.root, self.every, self.peaks = psutil.Process(pid), every, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            for p in procs:
                try:
                    if "astropt" in " ".join(p.cmdline()):
                        self.peaks[p.pid] = max(self.peaks.get(p.pid, 0), p.memory_info().rss)
                except psutil.Error:
                    pass
            time.sleep(self.every)

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        return sorted((v / 2**20 for v in self.peaks.values()), reverse=True)


def run_embed(model: Path, data: Path, procs: int, out: Path, batch: int) -> dict:
    cores = os.cpu_count() or 1
    env = dict(os.environ, OMP_NUM_THREADS=str(max(1, cores // procs)), PYTHONWARNINGS="ignore")
    embed = ["-m", "astropt", "-q", "embed", str(model), str(data), "--out", str(out), "--batch-size", str(batch)]
    if procs == 1:
        cmd = [sys.executable, *embed]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}", *embed]
    if out.exists():
        import shutil

        shutil.rmtree(out)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sampler = PeakRSS(proc.pid)
    _, err = proc.communicate()
    wall = time.perf_counter() - t0
    peaks = sampler.stop()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err[-2000:]}")
    manifest = json.loads((out / "_manifest.json").read_text())
    disk = sum(p.stat().st_size for p in out.glob("part-*.parquet"))
    ranks = peaks[:procs] if procs > 1 else peaks[:1]
    return {"procs": procs, "wall_s": round(wall, 2), "objects": manifest["n_rows"],
            "objects_per_s": manifest["n_rows"] / wall, "rss_per_rank_mb": [round(x) for x in ranks],
            "disk_bytes_per_object": disk / manifest["n_rows"], "dtype": manifest.get("dtype")}


def forward_flops_per_object(name: str) -> float:
    from astropt.config import load_config
    from astropt.tasks.demo import find_config

    m = load_config(find_config("tiny-cpu"), SIZES[name]).model
    run = m.default_embed_layer + 1
    tokens = m.sequence_length
    return tokens * (2 * 12 * m.n_embd**2 * run + 4 * run * m.n_embd * tokens)


def extrapolate(rows: list[dict], name: str, mfu: float) -> dict:
    """Time and disk for 10^9 objects: this machine as measured; GPUs at an assumed MFU."""
    best = max(rows, key=lambda r: r["objects_per_s"])
    per_gpu = mfu * GPU_PEAK_BF16 / forward_flops_per_object(name)
    disk = best["disk_bytes_per_object"]
    return {
        "cpu_days_per_1e9": 1e9 / best["objects_per_s"] / 86400,
        "gpu_objects_per_s_assumed": per_gpu,
        "gpu1_hours_per_1e9": 1e9 / per_gpu / 3600,
        "gpu64_hours_per_1e9": 1e9 / (64 * per_gpu) / 3600,
        "disk_tb_per_1e9": disk * 1e9 / 1e12,
        "disk_tb_per_1e9_fp16": disk * 1e9 / 1e12 / 2,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1024, help="objects to embed")
    parser.add_argument("--models", default="tiny-cpu,24M,95M")
    parser.add_argument("--procs", default="1,2")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--gpu-mfu", type=float, default=0.4, help="assumed forward MFU on a GPU (bf16)")
    args = parser.parse_args(argv)
    models = args.models.split(",")
    data, paths = prepare(args.n, models)
    results: dict = {"n": args.n, "load_start": os.getloadavg(), "gpu_mfu_assumed": args.gpu_mfu, "models": {}}
    lines = ["| model | procs | objects/s (marginal) | start-up s | RSS per rank MB | bytes/object | dtype |",
             "|---|---|---|---|---|---|---|"]
    small = survey(SMALL)
    for name in models:
        rows = []
        for procs in [int(p) for p in args.procs.split(",")]:
            # Marginal throughput: the run on SMALL objects measures start-up (imports, the
            # process group, loading the model), which a survey pays once.
            start = run_embed(paths[name], small, procs, OUT / f"emb-{name}-{procs}-small", args.batch_size)
            row = run_embed(paths[name], data, procs, OUT / f"emb-{name}-{procs}", args.batch_size)
            row["startup_s"] = round(start["wall_s"] - SMALL / row["objects_per_s"], 2)
            row["objects_per_s"] = (row["objects"] - SMALL) / max(row["wall_s"] - start["wall_s"], 1e-9)
            rows.append(row)
            lines.append(f"| {name} | {procs} | {row['objects_per_s']:.1f} | {row['startup_s']} | {row['rss_per_rank_mb']} | "
                         f"{row['disk_bytes_per_object']:.0f} | {row['dtype']} |")
        results["models"][name] = {"runs": rows, "per_1e9": extrapolate(rows, name, args.gpu_mfu)}
    results["load_end"] = os.getloadavg()
    lines += ["", "| model | CPU (this machine) days / 10^9 | 1 GPU h / 10^9 | 64 GPUs h / 10^9 | disk TB / 10^9 (fp32, fp16) |",
              "|---|---|---|---|---|"]
    for name, r in results["models"].items():
        e = r["per_1e9"]
        lines.append(f"| {name} | {e['cpu_days_per_1e9']:.0f} | {e['gpu1_hours_per_1e9']:.3g} | "
                     f"{e['gpu64_hours_per_1e9']:.3g} | {e['disk_tb_per_1e9']:.2f}, {e['disk_tb_per_1e9_fp16']:.2f} |")
    atomic_write_text(HERE / "out" / "embed_scale.json", json.dumps(results, indent=1))
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
