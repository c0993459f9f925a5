"""Thumbnails of objects: the one RGB composite of :mod:`astropt.viz`, as PNG bytes."""

from __future__ import annotations

import base64
import io

import numpy as np

from astropt import viz


def thumbnail_png(image: np.ndarray) -> bytes:
    """``(C, H, W)`` bands -> PNG bytes of their RGB composite, north up (as the figures draw it)."""
    from PIL import Image

    rgb = viz.rgb_composite(image)[::-1]  # figures use origin="lower": row 0 at the bottom
    buffer = io.BytesIO()
    Image.fromarray(np.round(rgb * 255).astype(np.uint8)).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:`` URI (for self-contained pages)."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
