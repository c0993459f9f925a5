"""Every named error of the package, in one module that imports nothing of it.

All are ``ValueError`` subclasses (a person's input problem): the CLI turns them into one
line on stderr. Each message names the object, file or key, the reason and what to do.
Their historical homes (``astropt.config``, ``astropt.data.shards``, ...) re-export them.
"""

from __future__ import annotations

import os


class ConfigError(ValueError):
    """A configuration value or key is invalid. The message names the key."""


class DataError(ValueError):
    """Bad input data: the message names the object id and/or file and the reason."""


class ObjectError(DataError):
    """One object could not be read; carries its id, file and the reason."""

    def __init__(self, obj_id: str, file: str | os.PathLike, reason: str):
        self.obj_id, self.file, self.reason = str(obj_id), str(file), reason
        super().__init__(f"object {self.obj_id!r} ({self.file}): {reason}")

    def __reduce__(self) -> tuple:
        # Picklable with its fields, so worker processes can send it back.
        return (type(self), (self.obj_id, self.file, self.reason))


class BadArray(ValueError):
    """An array cannot become an observation (the message is the reason)."""


class TokenizationError(ValueError):
    """An observation cannot be tokenised (wrong shape, non-finite values, ...)."""


class PretrainedError(ValueError):
    """A pretrained model (folder, checkpoint file or hub repository) is missing, cannot be
    fetched, is truncated, unsafe, or inconsistent with its config."""


class TrainingError(ValueError):
    """Training cannot go on (e.g. a non-finite loss); the message names the step and objects."""


class CodecUnavailableError(ImportError, ValueError):
    """A modality's codec needs a package that is not installed; the message names the extra."""


class CodecWeightsError(ValueError):
    """A codec's weights are neither cached nor downloadable (offline, gated, missing)."""
