"""``astropt info``: describe a model config or a pretrained model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from astropt.cli.tasks import MODEL_HELP
from astropt.config import load_config, to_dict


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show a model config (file) or pretrained model (folder/ckpt)")
    p.add_argument("target", help="a config file (.yaml/.toml), or a model: " + MODEL_HELP)
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. model.n_layer=6")
    p.set_defaults(func=run_info)

    p = sub.add_parser("push", help="upload a model (with a generated model card) to the Hugging Face hub")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("repo_id", help="hub repository to write, org/name (created if missing)")
    p.add_argument("--out", default=None, help="also keep the uploaded folder here (default: a temporary one)")
    p.add_argument("--license", default=None, help="license id for the card (e.g. mit, cc-by-4.0)")
    p.add_argument("--dataset", action="append", default=None, help="training dataset id (repeat)")
    p.add_argument("--tag", action="append", default=None, help="extra tag (repeat)")
    p.add_argument("--probe", default=None, help="probe.json of `astropt probe`, shown on the card")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.set_defaults(func=run_push)


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


def run_push(args: argparse.Namespace) -> int:
    import tempfile

    from astropt.model import AstroPT
    from astropt.model.card import push_folder

    model = AstroPT.from_pretrained(args.model)
    probe = json.loads(Path(args.probe).read_text()) if args.probe else None
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.out) if args.out else Path(tmp) / "model"
        model.save_pretrained(folder, license=args.license, datasets=args.dataset, tags=args.tag, probe=probe,
                              repo_id=args.repo_id)
        url = push_folder(folder, args.repo_id, private=args.private or None)
    print(url)
    return 0
