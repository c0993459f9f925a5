"""A pure translator of the reference implementation's ``ckpt.pt`` checkpoints: file ->
our model config + state dict + metadata (the conventions of the version that wrote it),
without running pickled code. It builds no model and writes nothing (see
:mod:`astropt.model.io` for that).

Generations: **v1** (PyPI 1.0.x; the original DESI and the Euclid models): one image
modality, no registry, ``transformer.wte.{0,2}`` / ``lm_head.{0,2,4}`` ReLU MLPs, default
embedding = mean over the last block's output. **v2** (2.0.x): a pickled modality registry,
``transformer.wte.<modality>`` or ``encoders.<modality>`` AIM MLPs, default embedding = mean
after block ``n_layer // 2``. **v3** (LLM backbone, the reference's main branch): see
:mod:`astropt.model.legacy_llm` (converted, or refused with what is missing).

A v2 reference checkpoint is a ``torch.save`` pickle of a dict with ``model`` (state dict),
``model_args`` (dict), ``modality_registry`` (a pickled ``ModalityRegistry`` of
``ModalityConfig`` dataclasses), and training state (``optimizer``, ``iter_num``,
``best_val_loss``, ``config``).

Safety: files are read with ``torch.load(weights_only=True)``. The reference's registry and
config classes are allowlisted under their qualified names but mapped onto inert stand-ins
that only hold plain data, so no code of the checkpoint's choosing is imported or run; any
other global (``os.system``, ``builtins.eval``, arbitrary classes) is refused with an error
naming the file and the global.

Mapping: both generations of parameter names (``transformer.wte/wpe`` + ``lm_head`` and the
later ``encoders/embedders/decoders``), torch.compile's ``_orig_mod.`` prefix and DDP's
``module.`` prefix, and loralib LoRA weights on ``c_attn`` (merged into the weight).
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.errors import PretrainedError

log = logging.getLogger(__name__)

_REFERENCE_MODULES = ("astropt.model", "model", "__main__")


class ReferenceObject:
    """Inert stand-in for a pickled reference object: its attributes as plain data."""

    def __setstate__(self, state: Any) -> None:
        # Mirrors pickle's default BUILD without calling anything of the file's choosing.
        if isinstance(state, tuple) and len(state) == 2:
            state, slots = state
            state = {**(state or {}), **(slots or {})}
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected state of a reference object: {type(state).__name__}")
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class ReferenceModalityConfig(ReferenceObject):
    """Stand-in for the reference's ``ModalityConfig`` dataclass."""


class ReferenceModalityRegistry(ReferenceObject):
    """Stand-in for the reference's ``ModalityRegistry`` (``.modalities``: name -> config)."""


class ReferenceGPTConfig(ReferenceObject):
    """Stand-in for the reference's ``GPTConfig`` dataclass (some scripts pickle it)."""


def _allowlist() -> list[tuple[type, str]]:
    stand_ins = {
        "ModalityConfig": ReferenceModalityConfig,
        "ModalityRegistry": ReferenceModalityRegistry,
        "GPTConfig": ReferenceGPTConfig,
    }
    return [(cls, f"{module}.{name}") for module in _REFERENCE_MODULES for name, cls in stand_ins.items()]


def _numpy_allowlist() -> list[Any]:
    """numpy scalars (e.g. a ``best_val_loss`` stored as ``np.float32``): data, not code."""
    import numpy as np

    items: list[Any] = [np.dtype]
    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    items.append(scalar)
    items += [type(np.dtype(t)) for t in ("float16", "float32", "float64", "int32", "int64", "bool")]
    return items


def read_reference_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a reference ``ckpt.pt`` as plain data (tensors, dicts, stand-in objects), safely.

    Raises:
        PretrainedError: the file is missing, truncated, not a checkpoint, or refers to a
            global (function/class) outside the allowlist; the message names the file and,
            for the latter, the globals. Nothing from the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such checkpoint file")
    kind = _file_kind(path)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(_allowlist() + _numpy_allowlist()):
            warnings.simplefilter("ignore", UserWarning)  # "pickle protocol 4": the error below says it
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        refused = _refused_global(exc)
        if refused:
            raise PretrainedError(
                f"{path}: refused to load: the pickle refers to code outside the allowlist of a "
                f"reference checkpoint ({refused}). Only tensors, containers and the reference's "
                "ModalityRegistry/ModalityConfig are accepted; nothing from the file was run."
            ) from None
        raise PretrainedError(f"{path}: {_not_readable(kind)}") from None
    except Exception:  # noqa: BLE001 - a corrupt pickle/zip fails in many ways; named here
        raise PretrainedError(f"{path}: {_not_readable(kind)}") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "model_args" not in ckpt:
        keys = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise PretrainedError(f"{path}: not a reference AstroPT checkpoint (needs 'model' and 'model_args'; has {keys})")
    return ckpt


def _file_kind(path: Path) -> str:
    """``zip`` (torch.save), ``pickle`` (a pickle stream: torch's legacy format or a plain
    pickle), ``safetensors`` or ``other``, from the first bytes."""
    with path.open("rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80":
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    return "other"


def _not_readable(kind: str) -> str:
    """Why a file that failed to load is not a checkpoint, for a person (never torch's
    advice to turn the safe loader off)."""
    return {
        "zip": "truncated or corrupted checkpoint (a torch.save archive that does not read to "
               "its end); copy or download it again",
        "pickle": "not a reference AstroPT checkpoint: a pickle that is not a torch.save "
                  "checkpoint of tensors (refused without running it)",
        "safetensors": "a safetensors file is read with its config.json as a pretrained folder, "
                       "not as a reference checkpoint",
    }.get(kind, "not a checkpoint (neither a torch.save archive nor a safetensors file)")


def _refused_global(exc: BaseException) -> str:
    """The global that torch's weights-only unpickler refused ("" for a corrupt stream)."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return found.group(1)
    found = re.search(r"(?:Unsupported global|unrecognized function)[:\s]*([\w.<>]+)", text)
    return found.group(1) if found else ""


# ----------------------------------------------------------------------------- config


def reference_modalities(ckpt: dict[str, Any], source: str) -> list[dict[str, Any]]:
    """The reference modality configs as plain dicts (from the registry or ``model_args``)."""
    registry = ckpt.get("modality_registry")
    entries: Any = None
    if registry is not None:
        entries = getattr(registry, "modalities", None)
        if entries is None and isinstance(registry, dict):
            entries = registry.get("modalities", registry)
    if entries is None:
        entries = ckpt["model_args"].get("modalities")
    if isinstance(entries, dict):
        entries = list(entries.values())
    if not entries:
        raise PretrainedError(f"{source}: the checkpoint has no modality registry (and no model_args.modalities)")
    out = []
    for e in entries:
        d = dict(e.__dict__) if isinstance(e, ReferenceObject) else dict(e) if isinstance(e, dict) else None
        if d is None or "name" not in d or "input_size" not in d:
            raise PretrainedError(f"{source}: unrecognised modality entry {e!r}")
        out.append(d)
    return out


def _modality_config(ref: dict[str, Any], n_chan: int, budget: int) -> ModalityConfig:
    """One of our modality configs for a reference modality.

    ``budget`` is the number of tokens this modality may take in ``block_size``; it only
    sets the nominal image size / maximum length (the weights do not depend on it).
    """
    name, input_size = str(ref["name"]), int(ref["input_size"])
    patch = int(ref.get("patch_size") or 0)
    learned = bool(ref.get("embed_pos", True))
    common = dict(
        name=name,
        input_size=input_size,
        position="learned" if learned else "continuous",
        pos_input_size=int(ref.get("pos_input_size") or 1),
        loss_weight=float(ref.get("loss_weight", 1.0)),
    )
    if patch > 0 and n_chan > 0 and input_size == patch * patch * n_chan:
        side = max(1, math.isqrt(budget)) * patch
        return ModalityConfig(
            kind="image", image_size=side, n_channels=n_chan, patch_size=patch,
            patch_order="spiral", normalize="patch", **common,
        )
    return ModalityConfig(kind="tokens", patch_size=max(patch, 1), max_tokens=budget, **common)


def reference_model_config(ckpt: dict[str, Any], source: str = "checkpoint") -> ModelConfig:
    """Our :class:`ModelConfig` equivalent to a reference checkpoint's ``model_args``.

    Defaults of the reference are kept: modalities sorted by name, no begin tokens,
    embeddings after block ``n_layer // 2``, mean-pooled.
    """
    args = ckpt["model_args"]
    if not isinstance(args, dict):
        args = dict(getattr(args, "__dict__", {}))
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size") if k not in args]
    if missing:
        raise PretrainedError(f"{source}: model_args lacks {missing}")
    if args.get("backbone", "native") != "native":
        raise PretrainedError(f"{source}: backbone {args['backbone']!r} (an LLM backbone) is not supported")
    attn = args.get("attn_type", "causal")
    if attn != "causal":
        raise PretrainedError(f"{source}: attn_type {attn!r} is not supported (only 'causal')")
    tokeniser = args.get("tokeniser") or "aim"
    if tokeniser not in ("aim", "affine"):
        raise PretrainedError(f"{source}: tokeniser {tokeniser!r} is not supported (only 'aim' and 'affine')")
    refs = reference_modalities(ckpt, source)
    block_size, n_layer = int(args["block_size"]), int(args["n_layer"])
    budget = max(1, block_size // len(refs))
    modalities = [_modality_config(r, int(args.get("n_chan") or 0), budget) for r in refs]
    return ModelConfig(
        n_layer=n_layer,
        n_head=int(args["n_head"]),
        n_embd=int(args["n_embd"]),
        block_size=block_size,
        dropout=float(args.get("dropout") or 0.0),
        bias=bool(args.get("bias", False)),
        tokeniser=tokeniser,
        attn="causal",
        modalities=modalities,
        modality_order="sorted",
        modality_tokens=False,
        embed_layer=n_layer // 2,
        embed_pool="mean",
    )


def v1_model_config(ckpt: dict[str, Any], source: str = "checkpoint") -> ModelConfig:
    """Our :class:`ModelConfig` for a v1 checkpoint (one image modality, ReLU tokenisers).

    v1 conventions: ``images`` of ``n_chan`` bands in ``patch_size`` patches, per-patch
    normalisation, spiral order unless the training config says otherwise, learned
    positions; the default embedding is the mean over tokens of the LAST block's output.
    """
    args = ckpt["model_args"] if isinstance(ckpt["model_args"], dict) else {}
    missing = [k for k in ("n_layer", "n_head", "n_embd", "block_size") if k not in args]
    if missing:
        raise PretrainedError(f"{source}: model_args lacks {missing}")
    attn = args.get("attn_type", "causal")
    if attn != "causal":
        raise PretrainedError(f"{source}: attn_type {attn!r} is not supported (only 'causal')")
    state = {_strip_prefixes(k): v for k, v in ckpt["model"].items()}
    input_size = int(state["transformer.wte.0.weight"].shape[1])
    n_chan = int(args.get("n_chan") or 1)
    patch = int(args.get("patch_size") or math.isqrt(input_size // n_chan))
    if patch * patch * n_chan != input_size:
        raise PretrainedError(
            f"{source}: token width {input_size} is not patch_size**2 * n_chan = {patch}**2 * {n_chan}"
        )
    block_size, n_layer = int(args["block_size"]), int(args["n_layer"])
    train_cfg = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    spiral = bool(train_cfg.get("spiral", True))
    image = ModalityConfig(
        name="images", kind="image", input_size=input_size, n_channels=n_chan, patch_size=patch,
        image_size=max(1, math.isqrt(block_size)) * patch, patch_order="spiral" if spiral else "raster",
        normalize="patch", position="learned",
    )
    return ModelConfig(
        n_layer=n_layer, n_head=int(args["n_head"]), n_embd=int(args["n_embd"]), block_size=block_size,
        dropout=float(args.get("dropout") or 0.0), bias=bool(args.get("bias", False)), tokeniser="relu",
        attn="causal", modalities=[image], modality_order="sorted", modality_tokens=False,
        embed_layer=n_layer - 1, embed_pool="mean",
    )


_V1_RENAMES = [
    (re.compile(r"^transformer\.wte\.(\d+)\.(weight|bias)$"), r"encoders.{m}.net.\1.\2"),
    (re.compile(r"^lm_head\.(\d+)\.(weight|bias)$"), r"decoders.{m}.net.\1.\2"),
    (re.compile(r"^transformer\.wpe\.weight$"), r"embedders.{m}.wpe.weight"),
]


def v1_state_dict(state: dict[str, torch.Tensor], modality: str, source: str) -> dict[str, torch.Tensor]:
    """Rename a v1 state dict to ours (the blocks and ``ln_f`` as in v2)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise PretrainedError(f"{source}: state entry {key!r} is a {type(value).__name__}, not a tensor")
        plain = _strip_prefixes(key)
        for pattern, repl in _V1_RENAMES:
            if pattern.match(plain):
                ours: str | None = pattern.sub(repl.replace("{m}", modality), plain)
                break
        else:
            ours = rename_reference_key(plain)
        if ours is None:
            continue
        if ours in out:
            raise PretrainedError(f"{source}: two tensors map onto {ours!r}")
        out[ours] = value
    return out


# ----------------------------------------------------------------------------- weights

_RENAMES = [
    (re.compile(r"^transformer\.wte\.([^.]+)\.(.+)$"), r"encoders.\1.\2"),
    (re.compile(r"^transformer\.wpe\.([^.]+)\.(.+)$"), r"embedders.\1.\2"),
    (re.compile(r"^lm_head\.([^.]+)\.(.+)$"), r"decoders.\1.\2"),
    (re.compile(r"^transformer\.h\.(\d+)\.(.+)$"), r"blocks.\1.\2"),
    (re.compile(r"^transformer\.ln_f\.(.+)$"), r"ln_f.\1"),
]
# The non-flash attention's constant causal-mask buffer: not a weight.
_MASK_BUFFER = re.compile(r"^transformer\.h\.\d+\.attn\.bias$")
_LORA = re.compile(r"^(blocks\.\d+\.attn\.c_attn)\.lora_([AB])$")


def _strip_prefixes(key: str) -> str:
    for prefix in ("_orig_mod.", "module."):
        while key.startswith(prefix):
            key = key[len(prefix):]
    return key.replace("._orig_mod.", ".")


def rename_reference_key(key: str) -> str | None:
    """Our parameter name for a reference state-dict key (None: not a weight, dropped)."""
    key = _strip_prefixes(key)
    if _MASK_BUFFER.match(key) and key.count(".") == 4:
        return None
    for pattern, repl in _RENAMES:
        if pattern.match(key):
            return pattern.sub(repl, key)
    return key  # later generation (encoders/embedders/decoders) or unknown: checked later


def lora_scaling(args: dict[str, Any], new_generation: bool) -> float:
    """loralib's ``lora_alpha / r`` as the reference constructed its LoRA layers.

    Up to 2.0.x the reference built ``lora.Linear(..., r=lora_r)`` without ``lora_alpha``,
    so loralib's default alpha of 1 applies (scaling ``1 / r``); later versions (with the
    ``encoders``/``decoders`` names) pass ``lora_alpha * sqrt(r)`` (rank-stabilised LoRA),
    i.e. a scaling of ``lora_alpha / sqrt(r)``. loralib merges the update into the weight
    in eval mode; checkpoints saved by the training script (in train mode) hold it unmerged.
    """
    r = int(args.get("lora_r") or 0)
    if r <= 0:
        return 0.0
    if new_generation and "lora_alpha" in args:
        return float(args["lora_alpha"]) / math.sqrt(r)
    return 1.0 / r


def reference_state_dict(
    state: dict[str, torch.Tensor], args: dict[str, Any], source: str, scaling: float | None = None
) -> dict[str, torch.Tensor]:
    """Rename a reference state dict to ours and merge LoRA weights (``W += B @ A * scaling``)."""
    renamed: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    new_generation = any(_strip_prefixes(k).startswith(("encoders.", "decoders.")) for k in state)
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise PretrainedError(f"{source}: state entry {key!r} is a {type(value).__name__}, not a tensor")
        ours = rename_reference_key(key)
        if ours is None:
            continue
        m = _LORA.match(ours)
        if m:
            lora.setdefault(m.group(1), {})[m.group(2)] = value
            continue
        if ours in renamed:
            raise PretrainedError(f"{source}: two tensors map onto {ours!r}")
        renamed[ours] = value
    if lora:
        scale = lora_scaling(args, new_generation) if scaling is None else scaling
        if scale == 0.0:
            raise PretrainedError(f"{source}: LoRA weights present but model_args.lora_r is 0")
        for prefix, ab in sorted(lora.items()):
            if set(ab) != {"A", "B"} or f"{prefix}.weight" not in renamed:
                raise PretrainedError(f"{source}: incomplete LoRA weights for {prefix} (have {sorted(ab)})")
            weight = renamed[f"{prefix}.weight"]
            delta = (ab["B"].double() @ ab["A"].double()) * scale  # (out, r) @ (r, in)
            renamed[f"{prefix}.weight"] = (weight.double() + delta).to(weight.dtype)
        # The scaling is a property of the reference version, not of the file: say which one.
        level = logging.WARNING if new_generation and scaling is None else logging.INFO
        log.log(level, "%s: merged LoRA weights of %d layers with scaling %.4g (override: lora_scale)",
                source, len(lora), scale)
    return renamed


# ----------------------------------------------------------------------------- entry point


@dataclass
class Translation:
    """A reference checkpoint in our terms."""

    config: ModelConfig
    state: dict[str, torch.Tensor]
    meta: dict[str, Any]
    """JSON-safe provenance: ``generation``, ``iter_num``, ``best_val_loss``,
    ``reference_model_args``."""


def translate(
    ckpt: dict[str, Any],
    source: str = "checkpoint",
    lora_scale: float | None = None,
    llm_arch: dict[str, Any] | None = None,
) -> Translation:
    """Our config, state dict and provenance for a reference checkpoint read by
    :func:`read_reference_checkpoint`.

    Args:
        lora_scale: override the LoRA scaling (default: as the reference version built it,
            see :func:`lora_scaling`).
        llm_arch: v3 only: the Hugging Face config (dict) of the checkpoint's LLM.
    """
    args = ckpt["model_args"]
    if not isinstance(args, dict):
        args = dict(getattr(args, "__dict__", {}))
    state = ckpt["model"]
    if not isinstance(state, dict):
        raise PretrainedError(f"{source}: 'model' is a {type(state).__name__}, not a state dict")
    generation = reference_generation(ckpt)
    if generation == "v3":
        from astropt.model.legacy_llm import translate_v3

        config, state = translate_v3(ckpt, args, source, llm_arch)
    elif generation == "v1":
        config = v1_model_config(ckpt, source)
        state = v1_state_dict(state, config.modalities[0].name, source)
    else:
        config = reference_model_config(ckpt, source)
        state = reference_state_dict(state, args, source, lora_scale)
    meta = {
        "generation": generation,
        "iter_num": _plain(ckpt.get("iter_num")),
        "best_val_loss": _plain(ckpt.get("best_val_loss")),
        "reference_model_args": {k: _plain(v) for k, v in args.items()},
    }
    return Translation(config, state, meta)


def reference_generation(ckpt: dict[str, Any]) -> str:
    """``v1`` (no modality registry, one unnamed modality) or ``v2``; ``v3`` for the LLM
    backbone of the reference's main branch."""
    args = ckpt["model_args"] if isinstance(ckpt["model_args"], dict) else {}
    if args.get("backbone", "native") not in ("native", None):
        return "v3"
    keys = {_strip_prefixes(k) for k in ckpt["model"]} if isinstance(ckpt["model"], dict) else set()
    if ckpt.get("modality_registry") is None and "modalities" not in args and "transformer.wte.0.weight" in keys:
        return "v1"
    return "v2"


def _plain(value: Any) -> Any:
    """JSON-safe version of a checkpoint value (tensors/numpy -> numbers, objects -> dicts)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    if isinstance(value, ReferenceObject):
        return {k: _plain(v) for k, v in value.__dict__.items()}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)
