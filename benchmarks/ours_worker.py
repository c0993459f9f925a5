"""Benchmark worker for *our* AstroPT: one measurement per process, JSON on the last line.

Run by ``benchmarks.run`` as ``python benchmarks/ours_worker.py '<json spec>'``, so that each
measurement has its own peak RSS and nothing (allocator caches, threads) leaks between them.
The measurements mirror ``reference_worker.py`` one to one.
"""

from __future__ import annotations

import contextlib
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402  (the worker runs as a script: benchmarks/ is not a package here)

from astropt.config import (  # noqa: E402
    DataConfig,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from astropt.model import AstroPT  # noqa: E402
from astropt.runtime import DistInfo, allocator_tuned, tune_cpu_allocator  # noqa: E402
from astropt.tasks.demo import find_config  # noqa: E402
from astropt.train import loop  # noqa: E402
from astropt.train.optim import param_groups  # noqa: E402


def model_config(shape: common.Shape) -> ModelConfig:
    # The image grid only sizes the config; the batches carry exactly n_tokens tokens.
    side = shape.patch * math.ceil(math.sqrt(shape.n_tokens))
    image = ModalityConfig(name="images", image_size=side, patch_size=shape.patch, n_channels=shape.channels)
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


def make_batch(shape: common.Shape, batch: int, n_tokens: int, seed: int = 1, dim: int = 0) -> dict[str, torch.Tensor]:
    """Random tokens of ``dim`` values each (default: one image patch)."""
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(batch, n_tokens, dim or shape.patch_dim, generator=g),
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


def run_config(spec: dict) -> tuple[RunConfig, common.Shape]:
    """The run a spec times: a shipped config (``config``: its name in configs/, with
    ``overrides``) as ``astropt train`` runs it, or the harness shape with a plain step
    (no gradient clipping, constant learning rate), as the reference worker runs it."""
    knobs = {k: spec[k] for k in ("dtype", "mixed_precision", "compile", "grad_accum", "attention", "malloc") if k in spec}
    if "config" in spec:
        overrides = [f"train.{k}={v}" for k, v in knobs.items()] + list(spec.get("overrides", []))
        cfg = load_config(find_config(spec["config"]), overrides)
        image = cfg.model.modalities[0]
        shape = common.Shape(spec["config"], cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd,
                             cfg.model.sequence_length, cfg.data.batch_size, image.patch_size, image.n_channels)
        return cfg, shape
    shape = common.shape_from_json(spec["shape"])
    train = TrainConfig(lr=1e-4, min_lr=1e-4, warmup_steps=0, max_steps=10**6, grad_clip=0.0, **knobs)
    return RunConfig(model=model_config(shape), data=DataConfig(batch_size=shape.batch), train=train), shape


def prepare_train(spec: dict) -> tuple[Callable[[], None], contextlib.AbstractContextManager, dict]:
    """One optimizer step of ``astropt train`` (``loop.train_step``: forward + backward of the
    AR loss over ``grad_accum`` micro-batches, AdamW) on random tokens, ready to call; the
    context it must run in; and what it computes (tokens, FLOPs, the resolved precision).

    Levers (spec keys): ``dtype``, ``mixed_precision``, ``attention``, ``compile``, ``grad_accum``,
    ``malloc``, ``fused`` (False: foreach AdamW), ``sdpa`` (``math``: unfused attention).
    """
    cfg, shape = run_config(spec)
    device = torch.device(spec.get("device", "cpu"))
    engine = loop.build_engine(cfg, DistInfo(device=device))
    if spec.get("fused", True) is False:
        t = cfg.train
        engine.optimizer = torch.optim.AdamW(param_groups(engine.parallel, t.weight_decay), lr=t.lr,
                                             betas=(t.beta1, t.beta2), foreach=True)
    c = loop.step_components(cfg, DistInfo(device=device), engine)
    engine.wrapped.train()
    dim = cfg.model.modalities[0].input_size  # a patch, plus its flux features where the config has them
    batch = {k: v.to(device) for k, v in make_batch(shape, shape.batch, shape.n_tokens, dim=dim).items()}
    ids = [f"obj{i}" for i in range(shape.batch)]
    batches = iter(lambda: (batch, ids), None)
    counter = iter(range(10**9))

    def step():
        loop.train_step(c, batches, next(counter))
        if device.type == "cuda":
            torch.cuda.synchronize()

    attention = contextlib.nullcontext()
    if spec.get("sdpa") == "math":
        from torch.nn.attention import SDPBackend, sdpa_kernel

        attention = sdpa_kernel(SDPBackend.MATH)
    tokens = shape.batch * shape.n_tokens * cfg.train.grad_accum
    n_mm = matmul_params(engine.model)
    info = {
        "tokens_per_step": tokens,
        "batch": shape.batch,
        "seq": shape.n_tokens,
        "grad_accum": cfg.train.grad_accum,
        "dtype_resolved": str(engine.dtype).removeprefix("torch."),
        "precision": engine.precision,
        "attention": engine.attention,
        "malloc_tuned": allocator_tuned(),
        "n_params": engine.model.num_params(),
        "n_params_matmul": n_mm,
        "flops_per_step": tokens * common.train_flops_per_token(n_mm, shape.n_layer, shape.n_embd, shape.n_tokens),
    }
    return step, attention, info


def bench_train(spec: dict) -> dict:
    """Tokens/s of :func:`prepare_train`'s step, and the inputs of its MFU."""
    step, attention, info = prepare_train(spec)
    with attention:
        times = common.timed(step, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {**common.stats(times), **info, "warmup": spec["warmup"], "repeats": len(times)}


def bench_embed(spec: dict) -> dict:
    """Embeddings at the default layer (mean-pooled), batched, as ``astropt embed`` computes
    them (weights cast once to the dtype, autocast for the inputs); objects/s and FLOPs."""
    tune_cpu_allocator(spec.get("malloc", "auto"))  # as `astropt embed` does on a CPU
    model, shape = build(spec)
    model.eval()
    dtype = getattr(torch, spec["dtype"])
    runner = model.inference_copy(dtype, compile=bool(spec.get("compile")))  # as `astropt embed --compile`
    embed = runner.embed
    batch_size = spec.get("batch", 32)
    batch = make_batch(shape, batch_size, shape.n_tokens)

    def run():
        with torch.no_grad(), autocast(spec["dtype"]):
            return embed(batch)["images"]

    times = common.timed(run, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {**common.stats(times), "objects_per_step": batch_size,
            "flops_per_step": batch_size * shape.n_tokens * embed_flops_per_token(model, shape),
            "malloc_tuned": allocator_tuned()}


def embed_flops_per_token(model: AstroPT, shape: common.Shape) -> float:
    """Forward FLOPs per token up to the embedding layer: 2 x the matmul weights run (the
    token encoder and the blocks up to ``default_embed_layer``) + the attention scores."""
    run = model.config.default_embed_layer + 1
    blocks = sum(p.numel() for b in list(model.blocks)[:run] for p in b.parameters() if p.dim() >= 2)
    encoder = sum(p.numel() for p in model.encoders.parameters() if p.dim() >= 2)
    return 2.0 * (blocks + encoder) + 4.0 * run * shape.n_embd * shape.n_tokens


def model_gemms(model: AstroPT, rows: int, mode: str) -> list[tuple[int, int, int, str]]:
    """``(M, K, N, layout)`` of every matrix product of the model's Linear layers for ``rows``
    tokens: the forward of the token encoder and the blocks up to the embedding layer
    (``embed``), or forward and backward of the encoder, every block and the decoder
    (``train``).

    ``layout`` is how the operands lie in memory when autograd runs them (``T``: the operand
    is a transposed view): the forward ``X W^T`` is ``NT`` (the weight is stored ``(N, K)``),
    the input gradient ``dY W`` is ``NN`` and the weight gradient ``dY^T X`` is ``TN``. The
    AMX kernels run a transposed left operand about 1.5x slower (benchmarks/RESULTS.md)."""
    linears = [m for part in _parts_run(model, mode) for m in part.modules() if isinstance(m, torch.nn.Linear)]
    shapes = []
    for layer in linears:
        n, k = layer.weight.shape
        shapes.append((rows, k, n, "NT"))
        if mode == "train":
            shapes += [(rows, n, k, "NN"), (n, rows, k, "TN")]
    return shapes


def _parts_run(model: AstroPT, mode: str) -> list[torch.nn.Module]:
    """The modules a pass runs: the token encoders and the blocks up to the embedding layer
    (``embed``), or the encoders, every block and the decoders (``train``)."""
    if mode == "embed":
        return [model.encoders, *list(model.blocks)[: model.config.default_embed_layer + 1]]
    return [model.encoders, *model.blocks, model.decoders]


def _operand(rows: int, cols: int, transposed: bool, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(cols, rows, dtype=dtype).t() if transposed else torch.randn(rows, cols, dtype=dtype)


def bench_gemms(spec: dict) -> dict:
    """The model's matrix products alone, at its shapes and in autograd's memory layouts,
    back to back (no attention, norms, activations or casts between them): the ceiling of
    the MFU a step of it can reach. ``layouts: false`` times every product with contiguous
    operands instead."""
    model, shape = build(spec)
    rows = spec.get("batch", shape.batch) * shape.n_tokens
    real = spec.get("layouts", True)
    run, flops, n = _gemms(model, rows, spec["mode"], getattr(torch, spec["dtype"]), real)
    times = common.timed(run, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {**common.stats(times), "flops_per_step": flops, "n_gemms": n, "rows": rows,
            "layouts": "autograd's" if real else "contiguous"}


def _gemms(model: AstroPT, rows: int, mode: str, dtype: torch.dtype, layouts: bool) -> tuple[Callable[[], None], float, int]:
    """A call that runs the model's matrix products (:func:`model_gemms`) back to back into
    outputs allocated once (the products alone, not the allocator), their FLOPs and count."""
    operands = [(_operand(m, k, layouts and layout[0] == "T", dtype), _operand(k, n, layouts and layout[1] == "T", dtype),
                 torch.empty(m, n, dtype=dtype)) for m, k, n, layout in model_gemms(model, rows, mode)]

    def run():
        for a, b, out in operands:
            torch.mm(a, b, out=out)

    flops = sum(2.0 * a.shape[0] * a.shape[1] * b.shape[1] for a, b, _ in operands)
    return run, flops, len(operands)


def bench_floor(spec: dict) -> dict:
    """Every kernel of a bf16 step of the model, each timed alone at its shapes (best of the
    repeats, warm, its inputs ready) and summed by class: the fastest step those kernels
    allow, had nothing else to run between them. ``mode`` ``embed``: the forward of
    ``astropt embed`` (encoder and blocks up to the embedding layer); ``train``: one optimizer
    step as ``bench_train`` runs it (cast-once bf16 weights, the ``recompute`` attention,
    fused AdamW; gradient clipping where the run has it). The small ops (the loss, position
    lookups, pooling) are left out, so the sum is a lower bound of the step's time, and the
    MFU it implies an upper bound of what the step can reach with these kernels (the report
    sets it beside the target)."""
    from astropt.model.attention import attention
    from astropt.model.transformer import MLP, TokenMLP

    tune_cpu_allocator(spec.get("malloc", "auto"))
    mode, dtype = spec["mode"], torch.bfloat16
    model, shape = build(spec)
    batch = spec.get("batch", shape.batch)
    rows, c, t = batch * shape.n_tokens, shape.n_embd, shape.n_tokens
    train = mode == "train"
    parts = _parts_run(model, mode)
    blocks = [p for p in parts if isinstance(p, type(model.blocks[0]))]
    hidden = [m.c_fc.out_features for part in parts for m in part.modules()
              if isinstance(m, MLP) or (isinstance(m, TokenMLP) and m.kind == "aim")]
    timed = {}

    def time_of(fn: Callable[[], object]) -> float:
        return min(common.timed(fn, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0)))

    def leaf(*size: int) -> torch.Tensor:
        return torch.randn(*size, dtype=dtype).requires_grad_(train)

    def fwd_bwd(fn: Callable[[], torch.Tensor], grad: torch.Tensor) -> Callable[[], object]:
        if not train:
            return lambda: fn()
        return lambda: fn().backward(grad)

    context = torch.enable_grad() if train else torch.no_grad()
    with context:
        timed["matmul"] = time_of(_gemms(model, rows, mode, dtype, layouts=True)[0])
        heads = shape.n_head
        q, k, v = (leaf(batch, heads, t, c // heads) for _ in range(3))
        kernel = "recompute" if train else "sdpa"
        timed["attention"] = len(blocks) * time_of(
            fwd_bwd(lambda: attention(q, k, v, None, 0.0, True, kernel), torch.randn_like(q)))
        norm = torch.nn.LayerNorm(c, bias=False).to(dtype).requires_grad_(train)
        x = leaf(rows, c)
        n_norms = 2 * len(blocks) + (1 if train else 0)  # ln_f runs before the decoders
        norms = n_norms * time_of(fwd_bwd(lambda: norm(x), torch.randn_like(x)))
        gelus = 0.0  # gelu_tanh's bf16 CPU kernels (the exact form), into outputs allocated once
        for width in hidden:
            h, g, out = (torch.randn(rows, width, dtype=dtype) for _ in range(3))
            gelus += time_of(lambda h=h, out=out: torch.ops.aten.gelu.out(h, out=out))
            if train:
                gelus += time_of(lambda h=h, g=g, out=out: torch.ops.aten.gelu_backward.grad_input(g, h, grad_input=out))
        timed["norms and GELU"] = norms + gelus
        y = torch.randn(rows, c, dtype=dtype)
        # residual adds: two per block forward, and as many gradient sums backward
        timed["other"] = (4 if train else 2) * len(blocks) * time_of(lambda: x.detach() + y)
    if train:
        cfg, _ = run_config(spec)
        engine = loop.build_engine(cfg, DistInfo(device=torch.device("cpu")))
        def trainable(module: torch.nn.Module) -> list[torch.nn.Parameter]:
            return [p for p in module.parameters() if p.requires_grad]

        master, compute = trainable(engine.model), engine.compute
        grads16 = [torch.randn(p.shape, dtype=dtype) for p in master]

        def casts():
            compute.pull()
            for p, g in zip(trainable(compute.module), grads16, strict=True):
                p.grad = g
            for p in master:
                p.grad = None
            compute.push_grads()

        timed["casts"] = time_of(casts)
        for p in master:
            p.grad = torch.randn_like(p)

        def optimizer():
            if cfg.train.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(master, cfg.train.grad_clip)
            engine.optimizer.step()

        timed["optimizer"] = time_of(optimizer)
        flops = rows * common.train_flops_per_token(matmul_params(engine.model), shape.n_layer, c, t)
    else:
        flops = rows * embed_flops_per_token(model, shape)
    return {"classes_s": timed, "floor_s": sum(timed.values()), "flops_per_step": flops, "rows": rows,
            "mode": mode, "batch": batch, "malloc_tuned": allocator_tuned()}


def bench_generate(spec: dict) -> dict:
    """Complete ``n_new`` image tokens from ``n_given`` (one object), with/without KV cache;
    the bytes of weights each new token reads (the bandwidth limit's numerator)."""
    model, shape = build(spec)
    model.eval()
    runner = model.inference_copy(getattr(torch, spec["dtype"]))
    given = make_batch(shape, 1, spec["n_given"])

    def run():
        with autocast(spec["dtype"]):
            return runner.generate(given, "images", spec["n_new"], use_cache=spec["use_cache"])

    times = common.timed(run, spec["warmup"], spec["repeats"])
    weights = sum(p.numel() * p.element_size() for n, p in runner.named_parameters() if ".wpe." not in n)
    return {**common.stats(times), "n_new": spec["n_new"], "weight_bytes": weights}


def bench_bandwidth(spec: dict) -> dict:
    """Memory read bandwidth: a sum over a tensor far larger than the caches (bytes/s)."""
    x = torch.ones(spec.get("mb", 512) * 2**20 // 4)
    times = common.timed(lambda: float(x.sum()), warmup=2, repeats=spec.get("repeats", 8))
    return {**common.stats(times), "bytes_per_s": x.numel() * 4 / min(times)}


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
    "gemms": bench_gemms,
    "floor": bench_floor,
    "generate": bench_generate,
    "parity": bench_parity,
    "data": bench_data,
    "peak": bench_peak,
    "bandwidth": bench_bandwidth,
}

if __name__ == "__main__":
    common.worker_main(HANDLERS)
