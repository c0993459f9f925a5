"""Shared preprocessing of raw arrays: layout to ``(C, H, W)``, band selection, centre
crop/pad, stretch and the finiteness check.

Every function raises :class:`BadArray` with a reason for a person; readers turn it into an
:class:`~astropt.data.sources.base.ObjectError` naming the object and the file.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from astropt.data.sources.base import SourceConfig
from astropt.errors import BadArray

__all__ = ["BadArray", "finish_record", "prepare_image", "center_crop_pad", "stretch", "to_chw"]


def to_chw(array: Any, layout: str = "auto", hwc_to_chw: str = "transpose") -> np.ndarray:
    """Any 2-D ``(H, W)`` or 3-D image array -> float32 ``(C, H, W)``.

    ``layout`` says whether a 3-D array is ``chw`` or ``hwc``; ``auto`` treats a last axis of
    at most 4 (and a first axis larger than 4) as channels. ``hwc_to_chw="swapaxes"`` gives
    ``(C, W, H)`` like ``np.swapaxes(x, 0, 2)`` (the reference's Hugging Face convention).
    """
    try:
        x = np.asarray(array)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise BadArray(f"not an array ({exc})") from None
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise BadArray(f"image has non-numeric dtype {x.dtype}")
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 3:
        channels_last = layout == "hwc" or (layout == "auto" and x.shape[-1] <= 4 < x.shape[0])
        if channels_last:
            x = np.swapaxes(x, 0, 2) if hwc_to_chw == "swapaxes" else np.transpose(x, (2, 0, 1))
    else:
        raise BadArray(f"image must be 2-D (H, W) or 3-D (bands, H, W), got shape {x.shape}")
    if min(x.shape) == 0:
        raise BadArray(f"image is empty (shape {x.shape})")
    # astype also turns big-endian FITS data into native float32.
    return np.ascontiguousarray(x.astype(np.float32, copy=False))


def select_channels(x: np.ndarray, channels: list[int]) -> np.ndarray:
    """Keep and reorder channels by index."""
    if not channels:
        return x
    if max(channels) >= x.shape[0]:
        raise BadArray(f"channels {channels} selected but the image has {x.shape[0]} bands")
    return x[list(channels)]


def center_crop_pad(x: np.ndarray, size: int, pad_value: float = 0.0) -> np.ndarray:
    """Crop or pad ``(C, H, W)`` to ``(C, size, size)`` around the centre.

    The centre pixel ``(H // 2, W // 2)`` stays at ``(size // 2, size // 2)``.
    """
    if size <= 0:
        return x
    c, h, w = x.shape
    out = np.full((c, size, size), pad_value, dtype=x.dtype)
    # Offsets of the source window and of its destination, per axis.
    spans = []
    for n in (h, w):
        src0 = max(n // 2 - size // 2, 0)
        dst0 = max(size // 2 - n // 2, 0)
        length = min(n - src0, size - dst0)
        spans.append((src0, dst0, length))
    (sy, dy, ly), (sx, dx, lx) = spans
    out[:, dy : dy + ly, dx : dx + lx] = x[:, sy : sy + ly, sx : sx + lx]
    return out


def stretch(x: np.ndarray, kind: str, scale: float = 1.0) -> np.ndarray:
    """``asinh(x / scale)`` or ``log1p(max(x, 0) / scale)``; ``none`` returns ``x``."""
    if kind == "asinh":
        return np.arcsinh(x / scale).astype(np.float32)
    if kind == "log":
        return np.log1p(np.maximum(x, 0) / scale).astype(np.float32)
    return x


def check_finite(name: str, x: np.ndarray) -> None:
    """Raise :class:`BadArray` naming how many values of ``x`` are NaN or Inf."""
    finite = np.isfinite(x)
    if not finite.all():
        n_nan, n_inf = int(np.isnan(x).sum()), int(np.isinf(x).sum())
        raise BadArray(f"{name} has {n_nan} NaN and {n_inf} Inf values (of {x.size})")


def prepare_image(array: Any, cfg: SourceConfig, layout: str | None = None) -> np.ndarray:
    """Raw image array -> the record's ``(C, H, W)`` float32 image, as configured.

    ``layout`` overrides ``cfg.layout`` for readers that know it (FITS is always ``chw``).
    """
    x = to_chw(array, layout or cfg.layout, cfg.hwc_to_chw)
    x = select_channels(x, cfg.channels)
    if cfg.n_bands and x.shape[0] != cfg.n_bands:
        raise BadArray(f"image has {x.shape[0]} bands, expected {cfg.n_bands}")
    # Check before cropping: a NaN outside the crop still means a broken cutout.
    check_finite("image", x)
    x = center_crop_pad(x, cfg.image_size, cfg.pad_value)
    return stretch(x, cfg.stretch, cfg.stretch_scale)


def prepare_vector(name: str, array: Any) -> np.ndarray:
    """A 1-D array (spectrum, wavelength, ivar) as finite float32."""
    try:
        x = np.asarray(array, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise BadArray(f"{name} is not numeric ({exc})") from None
    if x.ndim != 1:
        x = x.reshape(-1) if x.ndim == 2 and 1 in x.shape else x
    if x.ndim != 1 or x.size == 0:
        raise BadArray(f"{name} must be a non-empty 1-D array, got shape {x.shape}")
    check_finite(name, x)
    return x


def finish_record(
    obj_id: str,
    arrays: dict[str, Any],
    labels: dict[str, Any],
    cfg: SourceConfig,
    layout: str | None = None,
) -> dict[str, Any]:
    """Build the Observation record: the image field is preprocessed, other arrays checked."""
    record: dict[str, Any] = {"id": str(obj_id)}
    for name, value in arrays.items():
        # 1-D arrays are spectra-like even under the image field name (a FITS table).
        if name == cfg.field and np.ndim(value) != 1:
            record[name] = prepare_image(value, cfg, layout)
        else:
            record[name] = _other_array(name, value)
    record["labels"] = {k: _label_value(v) for k, v in labels.items()}
    return record


def _other_array(name: str, value: Any) -> np.ndarray:
    x = np.asarray(value)
    if x.ndim <= 1 or (x.ndim == 2 and 1 in x.shape):
        return prepare_vector(name, x)
    x = x.astype(np.float32)
    check_finite(name, x)
    return x


def _label_value(value: Any) -> Any:
    """Labels as plain Python scalars (float/int/str); numpy scalars unwrapped."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    arr = np.asarray(value)
    if arr.size == 1:
        return arr.item()
    raise BadArray(f"label value {value!r} is not a scalar")
