"""Named errors of the toolkit: each one is a message to a person (what, which object/file,
what to do), raised instead of a traceback."""

from __future__ import annotations


class PretrainedError(ValueError):
    """A pretrained model (folder, checkpoint file or hub repository) is missing, cannot be
    fetched, is truncated, unsafe, or inconsistent with its config."""
