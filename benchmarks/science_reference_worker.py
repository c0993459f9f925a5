"""Train the *reference* AstroPT (PyPI ``astropt`` 2.0.x) on given tokens; write its embeddings.

Executed only by the Python of the separate reference virtual environment, as a subprocess of
``benchmarks/science.py``; never imported by our package or tests. The tokens are made on our
side with the legacy preset (the reference's conventions: per-patch standardisation, spiral
order) and handed over as ``.npy`` files, so both models see exactly the same token values.

Usage: ``python science_reference_worker.py SPEC.json`` where the spec names
``train_tokens`` / ``held_tokens`` (``(N, T, D)`` float32), ``out`` (embeddings ``.npy``),
the model shape and the schedule (``steps``, ``batch``, ``lr``, ``min_lr``, ``warmup``,
``weight_decay``, ``grad_clip``, ``seed``). The last stdout line is a JSON summary.
"""

from __future__ import annotations

import json
import math
import sys
import time

import numpy as np
import torch


def build(spec: dict, n_tokens: int, token_dim: int) -> torch.nn.Module:
    # Imported here: this module is also imported by our tests (for ``lr_at``), where
    # ``astropt`` is our package, not the reference.
    from astropt.model import GPT, GPTConfig, ModalityConfig, ModalityRegistry

    config = GPTConfig(
        block_size=n_tokens,
        n_layer=spec["n_layer"],
        n_head=spec["n_head"],
        n_embd=spec["n_embd"],
        n_chan=spec["n_chan"],
        dropout=0.0,
        bias=False,
        attn_type="causal",
        tokeniser="aim",
    )
    images = ModalityConfig(
        name="images", input_size=token_dim, pos_input_size=1, patch_size=spec["patch_size"], embed_pos=True
    )
    config.modalities = [images]
    return GPT(config, ModalityRegistry([images]))


def lr_at(step: int, spec: dict) -> float:
    """Linear warmup then cosine to ``min_lr``: the same schedule as our training loop."""
    if step < spec["warmup"]:
        return spec["lr"] * (step + 1) / spec["warmup"]
    progress = min(1.0, (step - spec["warmup"]) / max(1, spec["steps"] - spec["warmup"]))
    return spec["min_lr"] + 0.5 * (1.0 + math.cos(math.pi * progress)) * (spec["lr"] - spec["min_lr"])


def train(model: torch.nn.Module, tokens: torch.Tensor, spec: dict) -> list[float]:
    """AR training as the reference does it: inputs tokens[:-1], targets tokens[1:], Huber loss."""
    opt = model.configure_optimizers(spec["weight_decay"], spec["lr"], (0.9, 0.95), "cpu")
    gen = torch.Generator().manual_seed(spec["seed"])
    n, t = tokens.shape[0], tokens.shape[1]
    positions = torch.arange(t - 1).expand(spec["batch"], -1)
    order, cursor, losses = torch.randperm(n, generator=gen), 0, []
    model.train()
    for step in range(spec["steps"]):
        if cursor + spec["batch"] > n:  # a new epoch: a fresh permutation, like a shuffling loader
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + spec["batch"]]
        cursor += spec["batch"]
        batch = tokens[idx]
        for group in opt.param_groups:
            group["lr"] = lr_at(step, spec)
        _, loss = model({"images": batch[:, :-1], "images_positions": positions}, {"images": batch[:, 1:]})
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec["grad_clip"])
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss))
    return losses


@torch.no_grad()
def embed(model: torch.nn.Module, tokens: torch.Tensor, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """The reference's default embedding (``generate_embeddings``: centre block, mean) and,
    from the same token embeddings, mean and max concatenated (our pooling lever)."""
    model.eval()
    t = tokens.shape[1]
    means, mean_max = [], []
    for chunk in tokens.split(batch):
        inputs = {"images": chunk, "images_positions": torch.arange(t).expand(len(chunk), -1)}
        means.append(model.generate_embeddings(inputs)["images"].numpy())
        x = model.generate_embeddings(inputs, reduction="none")["images"]
        mean_max.append(torch.cat([x.mean(1), x.amax(1)], -1).numpy())
    return np.concatenate(means), np.concatenate(mean_max)


def main() -> None:
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    train_tokens = torch.from_numpy(np.load(spec["train_tokens"]))
    held_tokens = torch.from_numpy(np.load(spec["held_tokens"]))
    model = build(spec, train_tokens.shape[1], train_tokens.shape[2])
    n_params = sum(p.numel() for p in model.parameters())
    start = time.time()
    losses = train(model, train_tokens, spec)
    seconds = time.time() - start
    mean, mean_max = embed(model, held_tokens)
    np.save(spec["out"], mean)
    if spec.get("out_mean_max"):
        np.save(spec["out_mean_max"], mean_max)
    print(json.dumps({"n_params": n_params, "train_seconds": seconds, "first_loss": losses[0],
                      "final_loss": float(np.mean(losses[-20:])), "steps": len(losses)}))


if __name__ == "__main__":
    main()
