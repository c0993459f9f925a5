"""Benchmark worker for the *reference* AstroPT (PyPI ``astropt`` 2.0.x).

Executed only by the Python of the separate reference virtual environment
(``benchmarks/out/refenv``), never imported by our package or tests. It builds the same
shapes as ``ours_worker.py`` with the reference's own classes and runs the same
measurements; the result is the last line of stdout (the reference prints while building).
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

from astropt.model import GPT, GPTConfig, ModalityConfig, ModalityRegistry  # noqa: E402


def build(spec: dict):
    shape = common.shape_from_json(spec["shape"])
    config = GPTConfig(
        block_size=common.BLOCK_SIZE,
        n_layer=shape.n_layer,
        n_head=shape.n_head,
        n_embd=shape.n_embd,
        n_chan=shape.channels,
        dropout=0.0,
        bias=False,
        attn_type="causal",
        tokeniser="aim",
    )
    images = ModalityConfig(
        name="images",
        input_size=shape.patch_dim,
        pos_input_size=1,
        patch_size=shape.patch,
        embed_pos=True,
    )
    registry = ModalityRegistry([images])
    config.modalities = [images]
    return GPT(config, registry), shape


def make_batch(batch: int, n_tokens: int, seed: int = 1, patch_dim: int = common.PATCH_DIM) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        "images": torch.randn(batch, n_tokens, patch_dim, generator=g),
        "images_positions": torch.arange(n_tokens).expand(batch, -1),
    }


def autocast(dtype: str) -> contextlib.AbstractContextManager:
    if dtype == "float32":
        return contextlib.nullcontext()
    return torch.autocast("cpu", dtype=getattr(torch, dtype))


def bench_train(spec: dict) -> dict:
    """The reference's training step: inputs = tokens[:-1], targets = tokens[1:]."""
    model, shape = build(spec)
    model.train()
    opt = model.configure_optimizers(0.1, 1e-4, (0.9, 0.95), "cpu")
    tokens = make_batch(shape.batch, shape.n_tokens + 1, patch_dim=shape.patch_dim)
    inputs = {"images": tokens["images"][:, :-1], "images_positions": tokens["images_positions"][:, :-1]}
    targets = {"images": tokens["images"][:, 1:]}

    def step():
        with autocast(spec["dtype"]):
            _, loss = model(inputs, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    times = common.timed(step, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {
        **common.stats(times),
        "tokens_per_step": shape.batch * shape.n_tokens,
        "n_params": model.get_num_params(),
    }


def bench_embed(spec: dict) -> dict:
    """``generate_embeddings`` (mean over tokens at the middle layer), batched."""
    model, shape = build(spec)
    model.eval()
    batch_size = spec.get("batch", 32)
    batch = make_batch(batch_size, shape.n_tokens, patch_dim=shape.patch_dim)

    def run():
        with autocast(spec["dtype"]):
            return model.generate_embeddings(batch)["images"]

    times = common.timed(run, spec["warmup"], spec["repeats"], spec.get("min_time", 0.0))
    return {**common.stats(times), "objects_per_step": batch_size}


def generate(model, inputs: dict, new_tokens: int) -> torch.Tensor:
    """The reference's ``GPT.generate`` loop (a full forward pass per new token, no KV
    cache), with the positions extended along with the tokens (the packaged method leaves
    them at the given length, so tokens and positions stop matching after one step)."""
    tokens, positions = inputs["images"], inputs["images_positions"]
    with torch.no_grad():
        for _ in range(new_tokens):
            outputs, _ = model({"images": tokens, "images_positions": positions}, target_modality="images")
            tokens = torch.cat([tokens, outputs["images"][:, -1:, :]], dim=1)
            positions = torch.arange(tokens.shape[1]).expand(tokens.shape[0], -1)
    return tokens


def bench_generate(spec: dict) -> dict:
    model, shape = build(spec)
    model.eval()
    given = make_batch(1, spec["n_given"], patch_dim=shape.patch_dim)

    def run():
        with autocast(spec["dtype"]):
            return generate(model, given, spec["n_new"])

    times = common.timed(run, spec["warmup"], spec["repeats"])
    return {**common.stats(times)}


def bench_parity(spec: dict) -> dict:
    """Save weights, an input and the reference's fp32 outputs for ``ours_worker`` to compare."""
    model, shape = build(spec)
    model.eval()
    batch = make_batch(4, shape.n_tokens, seed=7, patch_dim=shape.patch_dim)
    with torch.no_grad():
        embeddings = model.generate_embeddings(batch)["images"]
        outputs, _ = model(batch)
    torch.save(
        {
            "state_dict": model.state_dict(),
            "inputs": batch["images"],
            "positions": batch["images_positions"].contiguous(),
            "embeddings": embeddings,
            "outputs": outputs["images"],
        },
        spec["state_path"],
    )
    return {"saved": spec["state_path"]}


HANDLERS = {"train": bench_train, "embed": bench_embed, "generate": bench_generate, "parity": bench_parity}

if __name__ == "__main__":
    common.worker_main(HANDLERS)
