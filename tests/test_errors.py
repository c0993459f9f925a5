"""Every named error lives in astropt.errors and is still importable from its old home."""

from __future__ import annotations

import importlib

import pytest

from astropt import errors

OLD_HOMES = [
    ("astropt.config", "ConfigError"),
    ("astropt.data.shards", "DataError"),
    ("astropt.data.sources", "ObjectError"),
    ("astropt.data.sources", "BadArray"),
    ("astropt.data.sources.base", "ObjectError"),
    ("astropt.data.sources.preprocess", "BadArray"),
    ("astropt.modalities", "TokenizationError"),
    ("astropt.model", "PretrainedError"),
    ("astropt.model.io", "PretrainedError"),
    ("astropt.train.loop", "TrainingError"),
]


@pytest.mark.parametrize("module, name", OLD_HOMES)
def test_old_homes_re_export_the_one_class(module, name):
    assert getattr(importlib.import_module(module), name) is getattr(errors, name)


def test_every_error_is_a_value_error_and_object_errors_pickle():
    import pickle

    for name in ("ConfigError", "DataError", "ObjectError", "BadArray", "TokenizationError",
                 "PretrainedError", "TrainingError"):
        assert issubclass(getattr(errors, name), ValueError)
    exc = pickle.loads(pickle.dumps(errors.ObjectError("g1", "a.fits", "not 2-D")))
    assert isinstance(exc, errors.DataError) and (exc.obj_id, exc.file, exc.reason) == ("g1", "a.fits", "not 2-D")
