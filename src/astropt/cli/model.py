"""``astropt info``: describe a model config or a pretrained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from astropt.config import load_config, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model config (file) or pretrained model (folder/ckpt)")
    p.add_argument("target", help="a config file (.yaml/.toml), pretrained folder or ckpt.pt")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.n_layer=6")
    p.set_defaults(func=run_info)


def run_info(args: argparse.Namespace) -> int:
    from astropt.model import AstroPT, load_pretrained

    target = Path(args.target)
    if target.suffix in (".yaml", ".yml", ".toml"):
        cfg = load_config(target, args.overrides)
        model = AstroPT(cfg.model)
        config = cfg.model
    else:
        model = load_pretrained(target)
        config = model.config
    summary = {
        "parameters": model.num_params(),
        "sequence_length": config.sequence_length,
        "model": to_dict(config),
    }
    print(json.dumps(summary, indent=2))
    return 0
