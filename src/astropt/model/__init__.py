"""The model: transformer blocks, the AstroPT module, pretrained I/O."""

from astropt.errors import PretrainedError
from astropt.model.astropt import AstroPT, pool_tokens
from astropt.model.io import load_pretrained, save_pretrained


def _from_pretrained(cls, name_or_path, map_location="cpu", revision=None):
    """Load a pretrained folder, a reference ``ckpt.pt`` or a hub id (see ``load_pretrained``)."""
    return load_pretrained(name_or_path, map_location=map_location, revision=revision)


def _save_pretrained(self, directory, extra=None):
    """Write ``model.safetensors`` + ``config.json`` into ``directory``."""
    return save_pretrained(self, directory, extra=extra)


AstroPT.from_pretrained = classmethod(_from_pretrained)
AstroPT.save_pretrained = _save_pretrained

__all__ = ["AstroPT", "PretrainedError", "load_pretrained", "pool_tokens", "save_pretrained"]
