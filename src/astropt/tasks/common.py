"""Shared plumbing of the tasks: open data, check it fits the model, batch it.

Every task reads a prepared shard folder (or, when the sources package provides
``open_source``, any source it understands), checks once before work starts that the data
matches the model's modalities (fields present, band count, image size), and turns index
ranges into the model's batch dict through the one batch path of training
(:func:`astropt.data.loader.rows_to_records` and :class:`~astropt.data.loader.Collator`).
Device, dtype and ranks come from :mod:`astropt.runtime`.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astropt.config import ModalityConfig
from astropt.data.loader import Collator, rows_to_records, to_device
from astropt.data.noise import resolve_flux_scale
from astropt.data.shards import MANIFEST, ShardSet
from astropt.errors import DataError
from astropt.model import AstroPT, load_pretrained

log = logging.getLogger(__name__)


def open_data(path: str | os.PathLike) -> ShardSet:
    """Open a prepared shard folder (or another source, when ``astropt.data.sources`` can)."""
    path = Path(path)
    if (path / MANIFEST).is_file():
        return ShardSet(path)
    opener = _source_opener()
    if opener is not None:
        return opener(path)
    raise DataError(
        f"{path}: not a prepared shard folder (no {MANIFEST}); prepare it first with "
        "`astropt data prepare`"
    )


def _source_opener() -> Any:
    try:
        module = importlib.import_module("astropt.data.sources")
    except ImportError:
        return None
    return getattr(module, "open_source", None)


def load_model(model: AstroPT | str | os.PathLike, device: str = "cpu") -> AstroPT:
    """A model object, or load one from a pretrained folder / ``ckpt.pt`` / hub id."""
    if isinstance(model, AstroPT):
        return model
    return load_pretrained(model, map_location=device)


def used_modalities(model: AstroPT, data: ShardSet, names: list[str] | None = None) -> list[ModalityConfig]:
    """The model modalities to feed, checked against the data before any work.

    Raises:
        DataError: a modality's field is missing from the data, or its band count / image
            size differ from the model's. The message names the model modality and the data.
    """
    configs = model.config.modalities if names is None else [model.config.modality(n) for n in names]
    arrays = data.arrays
    where = getattr(data, "directory", data)
    for m in configs:
        if m.field not in arrays:
            raise DataError(
                f"the model needs modality {m.name!r} (field {m.field!r}) but data {where} has "
                f"only {sorted(arrays)}; pass the modalities to use, or use matching data"
            )
        spec = arrays[m.field]
        if m.kind == "image":
            shape = list(spec.shape)
            if len(shape) != 3:
                raise DataError(f"data {where}: field {m.field!r} has shape {shape}, not (C, H, W)")
            c, h, w = shape
            bands = f" ({', '.join(m.bands)})" if m.bands else ""
            if c != m.n_channels:
                raise DataError(
                    f"model modality {m.name!r} expects {m.n_channels} bands{bands} but data "
                    f"{where} has images with {c} bands"
                )
            if (h, w) != (m.image_size, m.image_size):
                raise DataError(
                    f"model modality {m.name!r} expects {m.image_size}x{m.image_size} images but "
                    f"data {where} has {h}x{w}"
                )
    return _untrained_units(configs, data, where)


def _untrained_units(configs: list[ModalityConfig], data: ShardSet, where: Any) -> list[ModalityConfig]:
    """Modalities whose ``flux_scale`` is still ``auto`` (a model that was never trained: training
    saves the measured numbers) take the sky noise of ``data``; a trained model keeps its own."""
    if not any(m.flux_scale == "auto" for m in configs):
        return configs
    log.warning("the model's flux_scale is 'auto' (it was never trained on a prepared folder): "
                "its flux features take the sky noise measured in %s", where)
    return [resolve_flux_scale(m, data.manifest.band_stats, str(where)) for m in configs]


def iter_batches(
    data: ShardSet, indices: np.ndarray, batch_size: int
) -> Iterator[tuple[np.ndarray, dict[str, Any]]]:
    """Yield ``(indices, rows)`` for consecutive chunks of ``indices``."""
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        yield chunk, data.get_batch(chunk)


def model_batches(
    data: ShardSet,
    indices: np.ndarray,
    batch_size: int,
    modalities: list[ModalityConfig],
    device: str | torch.device = "cpu",
) -> Iterator[tuple[np.ndarray, dict[str, Any], dict[str, torch.Tensor]]]:
    """Yield ``(indices, rows, model batch on device)`` for consecutive chunks of ``indices``."""
    collate = Collator(modalities)
    for chunk, rows in iter_batches(data, indices, batch_size):
        batch, _ = collate(rows_to_records(rows, data.label_names))
        yield chunk, rows, to_device(batch, device)


def is_redshift(name: str) -> bool:
    """Labels that get the astronomers' photo-z metrics (NMAD, outlier fraction)."""
    lowered = name.lower()
    return lowered in ("z", "zspec", "z_spec", "zphot", "photo_z") or "redshift" in lowered


def label_vector(labels: dict[str, np.ndarray], name: str, where: str) -> np.ndarray:
    """One label column, with clear errors when it is missing or carries no information."""
    if name not in labels:
        raise DataError(f"{where}: no label {name!r}; available labels: {sorted(labels)}")
    values = np.asarray(labels[name])
    if values.dtype.kind in "fiu":
        finite = values[np.isfinite(values.astype(np.float64))]
        if finite.size == 0 or np.all(finite == finite[0]):
            raise DataError(f"{where}: label {name!r} is constant or missing for every object")
    elif len(set(values.tolist())) < 2:
        raise DataError(f"{where}: label {name!r} is constant ({values[0]!r}) for every object")
    return values


def rare_flags(labels: dict[str, np.ndarray]) -> np.ndarray | None:
    """Ground truth of anomalies when the data carries it: ``is_rare`` or ``kind != normal``."""
    if "is_rare" in labels:
        return np.asarray(labels["is_rare"]).astype(bool)
    if "kind" in labels:
        return np.asarray([str(k) != "normal" for k in labels["kind"]])
    return None


def image_field(data: ShardSet) -> str | None:
    """The first ``(C, H, W)`` array field of the data (for thumbnails), if any."""
    for name, spec in data.arrays.items():
        if len(spec.shape) == 3:
            return name
    return None


def images_for_ids(data: ShardSet, ids: list[str], field: str | None = None) -> list[np.ndarray]:
    """``(C, H, W)`` images of objects by id (for figures), in the order of ``ids``."""
    field = field or image_field(data)
    if field is None:
        raise DataError(f"data {getattr(data, 'directory', data)} has no image field to show")
    row_of = {object_id: k for k, object_id in enumerate(data.ids)}
    missing = [i for i in ids if i not in row_of]
    if missing:
        raise DataError(f"ids {missing[:5]} are not in data {getattr(data, 'directory', data)}")
    rows = data.get_batch([row_of[i] for i in ids], fields=[field])
    return list(rows[field])
