"""``astropt data ...``: make and inspect datasets (synth, prepare, info, show)."""

from __future__ import annotations

import argparse
import importlib

DATA_COMMAND_MODULES: list[str] = ["astropt.cli.data_prepare", "astropt.cli.data_synth", "astropt.cli.data_sky"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="make and inspect datasets")
    data_sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    data_sub.required = True
    for name in DATA_COMMAND_MODULES:
        importlib.import_module(name).register(data_sub)
