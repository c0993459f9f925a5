"""Pretrained weights: ``model.safetensors`` + ``config.json`` folders, local or on the hub.

``config.json`` holds the full model config, modalities included, so it also records how
inputs must be tokenised (patch size, bands, order, normalisation). Files are written
atomically. Reference ``ckpt.pt`` files are imported by :mod:`astropt.model.legacy`.
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
from astropt.model.astropt import AstroPT

log = logging.getLogger(__name__)

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
FORMAT_VERSION = 1


def save_pretrained(model: AstroPT, directory: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.safetensors`` and ``config.json`` into ``directory`` (atomically).

    Args:
        extra: additional JSON-serialisable metadata stored under ``"extra"`` in config.json.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in _unwrap(model).state_dict().items()}
    with atomic_path(directory / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "astropt_format": str(FORMAT_VERSION)})
    meta = {"format": "astropt", "format_version": FORMAT_VERSION, "model": to_dict(model.config)}
    if extra:
        meta["extra"] = extra
    atomic_write_text(directory / CONFIG_NAME, json.dumps(meta, indent=2))
    return directory


def read_pretrained_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict[str, Any]]:
    """Read and validate ``config.json`` of a pretrained folder."""
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise PretrainedError(f"{path}: missing; a pretrained folder needs {CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
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


def load_pretrained(
    name_or_path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
) -> AstroPT:
    """Load a model from a pretrained folder, a reference ``ckpt.pt`` file or a hub id.

    Args:
        name_or_path: a local folder with ``config.json`` + ``model.safetensors``; a
            reference checkpoint file (``*.pt``/``*.pth``, imported safely); or a Hugging
            Face hub repository id (``org/name``), downloaded through ``huggingface_hub``.
    """
    path = Path(name_or_path)
    if path.is_file():
        from astropt.model.legacy import load_reference_checkpoint

        return load_reference_checkpoint(path, map_location=map_location)
    if not path.is_dir():
        path = _from_hub(str(name_or_path), revision)
    config, _ = read_pretrained_config(path)
    weights = path / WEIGHTS_NAME
    if not weights.is_file():
        raise PretrainedError(f"{weights}: missing")
    try:
        state = load_file(str(weights), device=str(map_location))
    except (SafetensorError, OSError, ValueError) as exc:
        raise PretrainedError(f"{weights}: unreadable or truncated safetensors file ({exc})") from exc
    model = AstroPT(config)
    load_state_strict(model, state, str(weights))
    model.to(map_location)
    model.eval()
    return model


def load_state_strict(model: AstroPT, state: dict[str, torch.Tensor], source: str) -> None:
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


def _from_hub(repo_id: str, revision: str | None) -> Path:
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise PretrainedError(
            f"{repo_id}: no such file or folder, and not a hub repository id of the form org/name"
        )
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise PretrainedError("huggingface_hub is needed to download models") from exc
    try:
        local = snapshot_download(repo_id, revision=revision, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME])
    except Exception as exc:  # noqa: BLE001 - network/auth errors of many kinds; re-raised named
        raise PretrainedError(f"{repo_id}: could not be fetched from the Hugging Face hub ({exc})") from exc
    return Path(local)


def _unwrap(model: torch.nn.Module) -> AstroPT:
    """Strip DDP/compile wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model  # type: ignore[return-value]
