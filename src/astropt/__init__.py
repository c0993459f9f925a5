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
from astropt.errors import ConfigError, PretrainedError
from astropt.modalities import Tokens, build_modality
from astropt.model import (
    AstroPT,
    convert_reference_checkpoint,
    load_astropt,
    load_pretrained,
    save_pretrained,
)

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = [
    "AstroPT",
    "ConfigError",
    "DataConfig",
    "ModalityConfig",
    "ModelConfig",
    "PretrainedError",
    "RunConfig",
    "TrainConfig",
    "Tokens",
    "build_modality",
    "convert_reference_checkpoint",
    "load_astropt",
    "load_config",
    "load_pretrained",
    "save_pretrained",
]
