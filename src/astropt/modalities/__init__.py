"""Modalities: one module per kind of observation, each turning arrays into tokens and back."""

from astropt.modalities.base import Modality, TokenizationError, Tokens, build_modality
from astropt.modalities.image import ImageModality, raster_order, spiral_order

__all__ = [
    "ImageModality",
    "Modality",
    "TokenizationError",
    "Tokens",
    "build_modality",
    "raster_order",
    "spiral_order",
]
