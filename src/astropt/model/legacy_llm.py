"""A pure translator of the reference's **v3** checkpoints (``backbone: llm``, its main
branch): state dict + ``model_args`` -> our config (``backbone: llm``) + state dict.

The reference wraps a Hugging Face causal LM as ``llm`` (with peft's ``base_model.model.``
prefix and ``lora_A/B.default`` adapter names when ``lora_r > 0``) and keeps its
``encoders``/``embedders``/``decoders`` beside it; ``torch.save`` of the whole model's state
holds the LLM's own weights too. What the checkpoint does not hold is the LLM's architecture
(its head count) and tokenizer: they come from ``model_args.llm_model_name`` (a hub id or a
folder), whose config the caller passes in as ``llm_arch``. Anything else is refused with
what is missing: no LLM weights (adapters only), adapters under names other than peft's
``default``, 4-bit quantised weights, no ``llm_model_name``.

Convention kept: the reference's embedding is ``hidden_states[len // 2]``, the output of
block ``(n_layer + 1) // 2 - 1``. Not kept: its ``<|end_{m}|>`` tokens and chat prompts
around observations (our sequence is ``<|begin_{m}|>`` + observation tokens).
"""

from __future__ import annotations

import re
from typing import Any

import torch

from astropt.config import LLMConfig, ModelConfig
from astropt.errors import PretrainedError
from astropt.model.legacy import _modality_config, _strip_prefixes, reference_modalities

_LAYER = re.compile(r"\.layers\.(\d+)\.")
_ADAPTER = re.compile(r"\.lora_[AB]\.([^.]+)\.weight$")


def llm_model_name(args: dict[str, Any], source: str) -> str:
    """The LLM a v3 checkpoint was built on (hub id or folder)."""
    name = args.get("llm_model_name")
    if not name:
        raise PretrainedError(
            f"{source}: an LLM-backbone checkpoint without model_args.llm_model_name: the LLM's "
            "architecture and tokenizer are not in the file, so it cannot be rebuilt"
        )
    return str(name)


def translate_v3(
    ckpt: dict[str, Any], args: dict[str, Any], source: str, llm_arch: dict[str, Any] | None
) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """Our config and state dict for a v3 checkpoint.

    Args:
        llm_arch: the Hugging Face config (as a dict) of ``model_args.llm_model_name``.
    """
    name = llm_model_name(args, source)
    if llm_arch is None:
        raise PretrainedError(
            f"{source}: the architecture of its LLM {name!r} (head count) is not in the checkpoint "
            "and could not be read; make the model's config.json reachable (network, hub cache or "
            "a local folder named by llm_model_name)"
        )
    if args.get("use_qlora"):
        raise PretrainedError(
            f"{source}: the LLM was trained with QLoRA (4-bit quantised weights); converting "
            "quantised weights is not supported: merge the adapters in the reference first"
        )
    state = {_strip_prefixes(k): v for k, v in ckpt["model"].items()}
    llm_keys = [k for k in state if k.startswith("llm.")]
    if not any(k.endswith("embed_tokens.weight") for k in llm_keys):
        raise PretrainedError(
            f"{source}: the LLM weights are not in the checkpoint (no llm.*embed_tokens.weight; "
            f"{len(llm_keys)} llm.* tensors, e.g. {llm_keys[:3]}): only adapters were saved, so the "
            "model cannot be rebuilt without the exact base weights it was trained from"
        )
    adapters = {m.group(1) for k in llm_keys if (m := _ADAPTER.search(k))}
    lora_r = int(args.get("lora_r") or 0)
    if adapters - {"default"}:
        raise PretrainedError(
            f"{source}: peft adapters named {sorted(adapters)}; only the single adapter 'default' "
            "(what the reference's get_peft_model creates) can be converted"
        )
    if bool(adapters) != (lora_r > 0):
        raise PretrainedError(
            f"{source}: model_args.lora_r={lora_r} but the state "
            f"{'has' if adapters else 'has no'} LoRA adapter weights"
        )
    embed = next(state[k] for k in llm_keys if k.endswith("embed_tokens.weight"))
    n_layer = 1 + max(int(m.group(1)) for k in llm_keys if (m := _LAYER.search(k)))
    n_head = int(llm_arch.get("num_attention_heads") or 0)
    if int(llm_arch.get("num_hidden_layers") or n_layer) != n_layer or n_head <= 0:
        raise PretrainedError(
            f"{source}: the state has {n_layer} LLM layers but {name!r}'s config says "
            f"{llm_arch.get('num_hidden_layers')} layers / {n_head} heads"
        )
    refs = reference_modalities(ckpt, source)
    block_size = int(args.get("block_size") or 1024)
    budget = max(1, block_size // len(refs) - 1)  # each modality also takes its begin token
    config = ModelConfig(
        n_layer=n_layer, n_head=n_head, n_embd=int(embed.shape[1]), block_size=block_size,
        bias=bool(args.get("bias", False)), tokeniser=args.get("tokeniser") or "aim",
        attn="causal", backbone="llm", modality_tokens=True, modality_order="config",
        modalities=[_modality_config(r, int(args.get("n_chan") or 0), budget) for r in refs],
        embed_layer=(n_layer + 1) // 2 - 1, embed_pool="mean",
        llm=LLMConfig(model_name=name, lora_r=lora_r, lora_alpha=float(args.get("lora_alpha") or 32.0)),
    )
    ours = {("llm.model." + k[4:] if k.startswith("llm.") else k): v for k, v in state.items()}
    return config, ours
