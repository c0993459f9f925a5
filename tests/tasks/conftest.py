"""Session fixtures of the task tests (helpers in tasks_fixtures.py)."""

from __future__ import annotations

import pytest
import torch
from tasks_fixtures import make_records, tiny_config, write_shards

from astropt.model import AstroPT, save_pretrained


@pytest.fixture(scope="session")
def shard_dir(tmp_path_factory):
    return write_shards(tmp_path_factory.mktemp("data") / "shards", make_records(40))


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("model") / "tiny"
    save_pretrained(AstroPT(tiny_config()), folder)
    return folder
