"""The CLI's choices come from the registries, its defaults from the functions it calls."""

from __future__ import annotations

import pytest

from astropt.cli import build_parser, main
from astropt.config import DTYPE_NAMES, POOLS
from astropt.runtime import DTYPES


def _option(command: str, flag: str):
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return next(a for a in sub.choices[command]._actions if flag in a.option_strings)


@pytest.mark.parametrize("pool", POOLS)
def test_embed_accepts_every_pool(pool):
    args = build_parser().parse_args(["embed", "model", "data", "--out", "e.parquet", "--pool", pool])
    assert args.pool == pool


def test_choices_come_from_the_registries():
    assert tuple(_option("embed", "--pool").choices) == POOLS
    assert tuple(_option("finetune", "--pool").choices) == tuple(p for p in POOLS if p != "none")
    assert tuple(_option("embed", "--dtype").choices) == DTYPE_NAMES == ("auto", *DTYPES)


@pytest.mark.parametrize("command, module, function", [
    (["embed", "m", "d", "--out", "e.parquet"], "astropt.tasks.embed", "embed"),
    (["finetune", "m", "d", "--target", "z"], "astropt.tasks.finetune", "finetune"),
])
def test_options_not_given_leave_the_function_defaults(command, module, function, monkeypatch):
    import importlib

    calls = []
    monkeypatch.setattr(importlib.import_module(module), function,
                        lambda *args, **kwargs: calls.append(kwargs) or {"mode": "", "n_train": 0, "n_test": 0,
                                                                         "trainable_parameters": 0, "metrics": {}})
    assert main(command) == 0
    given = {k for k, v in calls[0].items() if k not in ("full",)}
    assert given == set(), f"the CLI passed its own defaults for {given}"
    assert main([*command, "--pool", "mean_max", "--batch-size", "7"]) == 0
    assert calls[1]["pool"] == "mean_max" and calls[1]["batch_size"] == 7
