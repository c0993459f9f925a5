"""Modalities: one module per kind of observation, each turning arrays into tokens and back."""

from astropt.errors import TokenizationError
from astropt.modalities.base import Modality, Tokens, build_modality
from astropt.modalities.discrete import Codebook, DiscreteModality
from astropt.modalities.image import ImageModality, raster_order, spiral_order
from astropt.modalities.scalars import ScalarsModality
from astropt.modalities.spectrum import SpectrumModality
from astropt.modalities.timeseries import TimeSeriesModality

__all__ = [
    "Codebook",
    "DiscreteModality",
    "ImageModality",
    "Modality",
    "ScalarsModality",
    "SpectrumModality",
    "TimeSeriesModality",
    "TokenizationError",
    "Tokens",
    "build_modality",
    "raster_order",
    "spiral_order",
]
