"""The model: transformer blocks, the AstroPT module, pretrained I/O (local and hub)."""

from astropt.errors import PretrainedError
from astropt.model.astropt import AstroPT, pool_tokens
from astropt.model.io import save_pretrained
from astropt.model.pretrained import convert_reference_checkpoint, load_astropt, load_pretrained

__all__ = [
    "AstroPT",
    "PretrainedError",
    "convert_reference_checkpoint",
    "load_astropt",
    "load_pretrained",
    "pool_tokens",
    "save_pretrained",
]
