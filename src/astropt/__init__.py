"""AstroPT: large observation models for astronomy."""

import logging

from astropt.config import (
    DataConfig,
    ModalityConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    load_config,
)
from astropt.errors import ConfigError
from astropt.modalities import Tokens, build_modality
from astropt.model import AstroPT, load_pretrained, save_pretrained

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AstroPT",
    "ConfigError",
    "DataConfig",
    "ModalityConfig",
    "ModelConfig",
    "RunConfig",
    "TrainConfig",
    "Tokens",
    "build_modality",
    "load_config",
    "load_pretrained",
    "save_pretrained",
]
