"""The loading entry points users call: :func:`load_pretrained`, the reference-compatible
:func:`load_astropt`, and :func:`convert_reference_checkpoint` (``astropt convert``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from astropt.model.astropt import AstroPT

log = logging.getLogger(__name__)


def load_pretrained(
    name_or_path: str | os.PathLike,
    map_location: str | torch.device = "cpu",
    revision: str | None = None,
    subfolder: str | None = None,
    weights_filename: str | None = None,
) -> AstroPT:
    """:meth:`astropt.AstroPT.from_pretrained` as a function (same arguments)."""
    return AstroPT.from_pretrained(
        name_or_path, subfolder=subfolder, revision=revision, weights_filename=weights_filename,
        map_location=map_location,
    )


def load_astropt(
    repo_id: str = "Smith42/astroPT_v2.0",
    path: str | None = None,
    weights_filename: str = "ckpt.pt",
    revision: str | None = None,
    map_location: str | torch.device = "cpu",
) -> AstroPT:
    """Drop-in for the reference's ``load_astropt(repo_id, path, weights_filename)``.

    Fetches ``{path}/{weights_filename}`` of the hub repository (or its cache) and returns
    the model in eval mode, with the conventions of the version that wrote it.
    ``repo_id`` may also be a local folder (then ``path`` is a folder inside it).

    Example:
        ``model = load_astropt("Smith42/astroPT_v2.0", path="astropt/095M")``
    """
    return AstroPT.from_pretrained(
        repo_id, subfolder=path, revision=revision, weights_filename=weights_filename,
        map_location=map_location,
    )


def convert_reference_checkpoint(
    path: str | os.PathLike, out_dir: str | os.PathLike, lora_scale: float | None = None
) -> Path:
    """Convert a reference ``ckpt.pt`` (v1 or v2) into a pretrained folder.

    ``extra`` records the source file name and the reference provenance (generation,
    ``iter_num``, ``best_val_loss``, ``model_args``).
    """
    model = AstroPT.from_pretrained(path, lora_scale=lora_scale)
    out = model.save_pretrained(out_dir, extra={"converted_from": Path(path).name})
    log.info("converted %s -> %s (%d parameters)", path, out, model.num_params())
    return out
