"""Benchmark worker for *our* AstroPT: one measurement per process, JSON on the last line.

Run by ``benchmarks.run`` as ``python benchmarks/ours_worker.py '<json spec>'``, so that each
measurement has its own peak RSS and nothing (allocator caches, threads) leaks between them.
The measurements mirror ``reference_worker.py`` one to one.
"""

from __future__ import annotations

import contextlib
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (the worker runs as a script: benchmarks/ is not a package here)

from astropt.config import ModalityConfig, ModelConfig  # noqa: E402
from astropt.model import AstroPT  # noqa: E402


def model_config(shape: common.Shape) -> ModelConfig:
    # The image grid only sizes the config; the batches carry exactly n_tokens tokens.
    side = common.PATCH * math.ceil(math.sqrt(shape.n_tokens))
    image = ModalityConfig(name="images", image_size=side, patch_size=common.PATCH, n_channels=common.CHANNELS)
    return ModelConfig(
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        block_size=common.BLOCK_SIZE,
        modalities=[image],
    )


def build(spec: dict) -> tuple[AstroPT, common.Shape]:
    shape = common.shape_from_json(spec["shape"])
    model = AstroPT(model_config(shape))
    return model, shape


def make_batch(shape: common.Shape, batch: int, n_tokens: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(batch, n_tokens, common.PATCH_DIM, generator=g),
        "images_positions": torch.arange(n_tokens).expand(batch, -1),
    }


def autocast(dtype: str, device: str = "cpu") -> contextlib.AbstractContextManager:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=getattr(torch, dtype))


def matmul_params(model: AstroPT) -> int:
    """Parameters that take part in matmuls (all but the position-embedding tables)."""
    lookup = sum(p.numel() for n, p in model.named_parameters() if ".wpe." in n)
    return model.num_params() - lookup


class LossForward(torch.nn.Module):
    """The AR loss as a ``forward``, so that ``torch.compile`` traces the whole step."""

    def __init__(self, model: AstroPT):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.loss(batch, "ar")


def bench_train(spec: dict) -> dict:
    """Forward + backward + AdamW step of the AR loss; tokens/s and MFU inputs."""
    model, shape = build(spec)
    device = spec.get("device", "cpu")
    model.train().to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=1e-4, betas=(0.9, 0.95), fused=spec.get("fused", True))
    loss_fn = LossForward(model)
    if spec.get("compile"):
        loss_fn = torch.compile(loss_fn)
    batch = {k: v.to(device) for k, v in make_batch(shape, shape.batch, shape.n_tokens).items()}

    def step():
        with autocast(spec["dtype"], device):
            loss = loss_fn(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device != "cpu":
            torch.cuda.synchronize()

    times = common.timed(step, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    tokens = shape.batch * shape.n_tokens
    return {
        **common.stats(times),
        "tokens_per_step": tokens,
        "n_params": model.num_params(),
        "n_params_matmul": matmul_params(model),
        "flops_per_step": tokens
        * common.train_flops_per_token(matmul_params(model), shape.n_layer, shape.n_embd, shape.n_tokens),
    }


def bench_embed(spec: dict) -> dict:
    """Embeddings at the default layer (mean-pooled), batched; objects/s."""
    model, shape = build(spec)
    model.eval()
    batch_size = spec.get("batch", 32)
    batch = make_batch(shape, batch_size, shape.n_tokens)

    def run():
        with autocast(spec["dtype"]):
            return model.embed(batch)["images"]

    times = common.timed(run, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {**common.stats(times), "objects_per_step": batch_size}


def bench_generate(spec: dict) -> dict:
    """Complete ``n_new`` image tokens from ``n_given`` (one object), with/without KV cache."""
    model, shape = build(spec)
    model.eval()
    given = make_batch(shape, 1, spec["n_given"])

    def run():
        with autocast(spec["dtype"]):
            return model.generate(given, "images", spec["n_new"], use_cache=spec["use_cache"])

    times = common.timed(run, spec["warmup"], spec["repeats"])
    return {**common.stats(times)}


def bench_parity(spec: dict) -> dict:
    """Load the reference's weights (a state dict the reference worker saved) and compare
    our fp32 embeddings and next-token predictions with the reference's on the same input."""
    model, shape = build(spec)
    ref = torch.load(spec["state_path"], map_location="cpu", weights_only=True)
    model.load_state_dict(rename_reference(ref["state_dict"]))
    model.eval()
    batch = {"images": ref["inputs"], "images_positions": ref["positions"]}
    with torch.no_grad():
        emb = model.embed(batch)["images"]
        pred = model.predict_all(batch)["images"]
    return {
        "embed_max_abs_diff": float((emb - ref["embeddings"]).abs().max()),
        "predict_max_abs_diff": float((pred - ref["outputs"]).abs().max()),
        "embed_scale": float(ref["embeddings"].abs().max()),
    }


def rename_reference(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Reference parameter names -> ours (same modules, different containers)."""
    prefixes = [
        ("transformer.wte.", "encoders."),
        ("transformer.wpe.", "embedders."),
        ("transformer.h.", "blocks."),
        ("transformer.ln_f.", "ln_f."),
        ("lm_head.", "decoders."),
    ]
    out = {}
    for name, value in state.items():
        for old, new in prefixes:
            if name.startswith(old):
                name = new + name[len(old) :]
                break
        out[name] = value
    return out


def bench_data(spec: dict) -> dict:
    """Objects/s from prepared shards to model batches (read, tokenise, collate)."""
    from astropt.data.loader import Collator, ResumableLoader, ShardDataset

    shape = common.shape_from_json(spec["shape"])
    config = model_config(shape)
    folder = Path(spec["data_dir"]) / f"shards-{config.modalities[0].image_size}"
    if not folder.exists():
        write_shards(folder, spec["n_objects"], config.modalities[0].image_size)
    dataset = ShardDataset(folder, config, split="all", augment=spec.get("augment", False))
    loader = ResumableLoader(dataset, Collator(config), shape.batch, num_workers=spec.get("workers", 0))
    batches = iter(loader)
    n_batches = spec["n_objects"] // shape.batch

    def epoch():
        for _ in range(n_batches):
            next(batches)

    times = common.timed(epoch, spec["warmup"], spec["repeats"])
    return {**common.stats(times), "objects_per_step": n_batches * shape.batch}


def write_shards(folder: Path, n_objects: int, side: int) -> None:
    """A small prepared folder of random 3-band images (the format, not the content, matters)."""
    from astropt.data.shards import ArraySpec, finalize, write_shard

    rng = np.random.default_rng(0)
    arrays = {"image": ArraySpec([common.CHANNELS, side, side])}
    per_shard = max(1, n_objects // 4)
    entries = []
    for index, start in enumerate(range(0, n_objects, per_shard)):
        records = [
            {"id": f"obj{i:06d}", "image": rng.standard_normal((common.CHANNELS, side, side), dtype=np.float32), "labels": {}}
            for i in range(start, min(n_objects, start + per_shard))
        ]
        entries.append(write_shard(folder, index, records, arrays))
    finalize(folder, entries, arrays, labels={})


def bench_peak(spec: dict) -> dict:
    """Peak matmul FLOP/s of this machine for one dtype (the MFU denominator)."""
    device = spec.get("device", "cpu")
    sizes = (1024, 2048) if device == "cpu" else (4096, 8192)
    return common.matmul_peak(spec["dtype"], sizes, spec.get("repeats", 6), device)


HANDLERS = {
    "train": bench_train,
    "embed": bench_embed,
    "generate": bench_generate,
    "parity": bench_parity,
    "data": bench_data,
    "peak": bench_peak,
}

if __name__ == "__main__":
    common.worker_main(HANDLERS)
