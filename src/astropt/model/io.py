"""Pretrained weights: ``model.safetensors`` + ``config.json`` folders, local or on the hub.

``config.json`` holds the full model config, modalities included, so it also records how
inputs must be tokenised (patch size, bands, order, orientation, normalisation) and, under
``extra.preprocessing``, how raw inputs (e.g. a hub dataset's JPEGs) become arrays. Files are
written atomically. Reference ``ckpt.pt`` files are translated by
:mod:`astropt.model.legacy`; where a model lives (local path or hub id) is
:mod:`astropt.model.hub`'s business. :class:`PretrainedMixin` gives the model class
``from_pretrained`` / ``save_pretrained``; this module never imports the model class.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from astropt.atomic import atomic_path, atomic_write_text
from astropt.config import ModelConfig, from_dict, to_dict
from astropt.errors import ConfigError, PretrainedError
from astropt.model import hub, legacy
from astropt.model.hub import CONFIG_NAME, WEIGHTS_NAME
from astropt.model.published import conventions_for

LLM_FILES = "llm"
"""Folder beside the weights with an LLM backbone's config and tokenizer."""

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

__all__ = [
    "CONFIG_NAME", "WEIGHTS_NAME", "PretrainedError", "PretrainedMixin", "load_state_strict",
    "read_pretrained_config", "save_pretrained",
]


class PretrainedMixin:
    """``from_pretrained`` / ``save_pretrained`` for a model class built from a ModelConfig."""

    config: ModelConfig

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        subfolder: str | None = None,
        revision: str | None = None,
        weights_filename: str | None = None,
        map_location: str | torch.device = "cpu",
        cache_dir: str | os.PathLike | None = None,
        lora_scale: float | None = None,
    ):
        """Load a model (eval mode) from a pretrained folder, a reference ``ckpt.pt`` or the hub.

        Args:
            name_or_path: a local folder (``config.json`` + ``model.safetensors``), a
                reference checkpoint file (v1 or v2, read without running pickled code), or
                a hub id ``org/name[/subfolder][@revision]``.
            subfolder: folder inside the repository (or local folder), e.g. ``astropt/095M``.
            revision: branch, tag or commit to pin (hub only).
            weights_filename: the weights file to use in that folder (e.g. ``ckpt.pt``);
                default: ``model.safetensors``, else ``ckpt.pt``.
            lora_scale: override the LoRA scaling of a reference checkpoint.

        A model from a published repository carries that repository's conventions
        (embedding layer/pooling, image orientation, preprocessing: see
        ``astropt.model.published``).
        """
        path = hub.locate(name_or_path, subfolder, revision, weights_filename, cache_dir)
        ref = None if Path(name_or_path).exists() else hub.parse_hub_ref(str(name_or_path), subfolder, revision)
        config, state, extra = _read_any(path, lora_scale)
        if ref is not None:
            config, extra = conventions_for(ref, config, extra)
            extra.setdefault("source", {"repo_id": ref.repo_id, "path": ref.path, "revision": ref.revision})
        llm_files = _llm_files(path, config, extra)
        model = cls(config, llm_files=llm_files) if llm_files else cls(config)
        load_state_strict(model, state, str(path))
        model.pretrained_extra = extra
        model.to(map_location)
        model.eval()
        return model

    def save_pretrained(
        self,
        directory: str | os.PathLike,
        extra: dict[str, Any] | None = None,
        push_to_hub: bool = False,
        repo_id: str | None = None,
        **card: Any,
    ) -> Path:
        """Write ``model.safetensors`` + ``config.json`` (+ a model card ``README.md``).

        Args:
            extra: JSON metadata stored under ``"extra"`` (default: what the model was loaded
                with, e.g. its preprocessing).
            push_to_hub: also upload the folder to the hub repository ``repo_id``.
            card: fields of the model card (see ``astropt.model.card.model_card``).
        """
        from astropt.model.card import push_folder, write_model_card

        merged = {**getattr(self, "pretrained_extra", {}), **(extra or {})}
        out = save_pretrained(self, directory, extra=merged)
        write_model_card(out, self, merged, repo_id=repo_id, **card)
        if push_to_hub:
            if not repo_id:
                raise PretrainedError("push_to_hub needs repo_id (org/name)")
            push_folder(out, repo_id)
        return out


def save_pretrained(model: torch.nn.Module, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (atomically)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = _unwrap(model)
    state, seen = {}, set()
    for k, v in model.state_dict().items():
        v = v.detach().contiguous().cpu()
        # Tied weights (an LLM's embeddings and head) share memory, which safetensors refuses.
        state[k] = v.clone() if v.data_ptr() in seen else v
        seen.add(v.data_ptr())
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "astropt_format": str(FORMAT_VERSION)})
    meta: dict[str, Any] = {"format": "astropt", "format_version": FORMAT_VERSION, "model": to_dict(model.config)}
    if extra:
        meta["extra"] = extra
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2))
    save_files = getattr(model, "save_backbone_files", None)
    if save_files is not None:  # an LLM backbone's config and tokenizer
        save_files(directory)
    return directory


def read_pretrained_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate ``config.json`` of a pretrained folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise PretrainedError(f"{path}: missing; a pretrained folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PretrainedError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != "astropt" or "model" not in meta:
        raise PretrainedError(f"{path}: not an AstroPT config (no 'format': 'astropt' / 'model')")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise PretrainedError(
            f"{path}: format version {meta['format_version']} is newer than this astropt supports "
            f"({FORMAT_VERSION}); upgrade astropt"
        )
    try:
        config = from_dict(ModelConfig, meta["model"])
    except ConfigError as exc:
        raise PretrainedError(f"{path}: {exc}") from exc
    return config, meta.get("extra", {})


def _read_any(path: Path, lora_scale: float | None) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Config, state and metadata from a local folder or file of either format."""
    if path.is_dir():
        if not (path / CONFIG_NAME).is_file():
            ckpts = sorted(path.glob("*.pt"))
            if len(ckpts) == 1:
                return _read_any(ckpts[0], lora_scale)
        return _read_folder(path)
    if path.suffix == ".safetensors":
        return _read_folder(path.parent, path)
    ckpt = legacy.read_reference_checkpoint(path)
    arch = _reference_llm_arch(ckpt, str(path)) if legacy.reference_generation(ckpt) == "v3" else None
    t = legacy.translate(ckpt, str(path), lora_scale, arch)
    _check_finite(t.state, str(path))
    return t.config, t.state, {"reference": t.meta}


def _llm_files(path: Path, config: ModelConfig, extra: dict[str, Any]) -> str | None:
    """Where an LLM backbone's config + tokenizer come from: the saved ``llm`` folder, or,
    for a reference v3 checkpoint, its LLM's hub id / folder (the weights are in the file)."""
    if config.backbone != "llm":
        return None
    folder = (path if path.is_dir() else path.parent) / LLM_FILES
    if folder.is_dir():
        return str(folder)
    if extra.get("reference", {}).get("generation") == "v3":
        return config.llm.model_name
    return None


def _reference_llm_arch(ckpt: dict[str, Any], source: str) -> dict[str, Any] | None:
    """The Hugging Face config of a v3 checkpoint's LLM (None when it cannot be read)."""
    args = ckpt["model_args"] if isinstance(ckpt["model_args"], dict) else {}
    name = args.get("llm_model_name")
    if not name:
        return None
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(str(name)).to_dict()
    except (ImportError, OSError, ValueError) as exc:
        log.warning("%s: could not read the config of its LLM %r: %s", source, name, exc)
        return None


def _read_folder(folder: Path, weights: Path | None = None):
    config, extra = read_pretrained_config(folder)
    weights = weights or folder / WEIGHTS_NAME
    if not weights.is_file():
        raise PretrainedError(f"{weights}: missing")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError(f"{weights}: unreadable or truncated safetensors file ({exc})") from exc
    _check_finite(state, str(weights))
    return config, state, extra


def _check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights with NaN/Inf: every output of such a model would be garbage."""
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise PretrainedError(
            f"{source}: {len(bad)} weight tensor(s) hold NaN or Inf values ({bad[:5]}); the file is "
            "damaged or the training diverged: use an earlier checkpoint"
        )


def load_state_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a state dict, raising one error that lists missing/unexpected/misshapen tensors."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if own[k].shape != state[k].shape
    )
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing tensors {missing}")
        if unexpected:
            parts.append(f"unexpected tensors {unexpected}")
        if shapes:
            parts.append(f"shape mismatches {shapes}")
        raise PretrainedError(f"{source}: weights do not match the config: " + "; ".join(parts))
    model.load_state_dict(state, strict=True)


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """Strip DDP/compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model
