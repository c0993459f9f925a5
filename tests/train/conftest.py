"""Session fixtures of the training tests (helpers in train_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from train_fixtures import make_shards


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory) -> Path:
    return make_shards(tmp_path_factory.mktemp("shards"))
