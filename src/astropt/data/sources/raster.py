"""JPEG/PNG (and other Pillow formats): RGB -> 3 bands, grey -> 1 band.

Pixel values are kept as they are (e.g. 0..255); the per-patch normalisation makes the
scale irrelevant to the model. Alpha channels are dropped; palette and CMYK images are
converted to RGB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from astropt.errors import BadArray

RASTER_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
GREY_MODES = {"1", "L", "I", "I;16", "I;16B", "I;16L", "F"}


def is_raster(path: str | Path) -> bool:
    return str(path).lower().endswith(RASTER_SUFFIXES)


def pil_to_array(image: Any) -> np.ndarray:
    """A PIL image -> ``(H, W)`` (grey) or ``(H, W, 3)`` (colour) array."""
    mode = image.mode
    if mode in ("LA", "La"):
        image = image.convert("L")
    elif mode not in GREY_MODES and mode != "RGB":
        image = image.convert("RGB")  # RGBA, P, CMYK, YCbCr, ...
    array = np.asarray(image)
    if array.ndim not in (2, 3):
        raise BadArray(f"image mode {mode} gives an array of shape {array.shape}")
    return array


def read_raster(paths: list[Path], field: str) -> dict[str, np.ndarray]:
    """Raw ``(H, W[, 3])`` array of one image file (several files are stacked as bands)."""
    planes = []
    for path in paths:
        with Image.open(path) as image:
            image.load()  # decode now: a truncated file fails here, not later
            planes.append(pil_to_array(image))
    if len(planes) == 1:
        return {field: planes[0]}
    if any(p.ndim != 2 for p in planes) or len({p.shape for p in planes}) != 1:
        raise BadArray("one file per band needs grey images of the same size")
    return {field: np.stack(planes)}
