"""``astropt train | export | plot``: pretraining runs and what is made from them."""

from __future__ import annotations

import argparse

from astropt.config import load_config


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="pretrain a model (single process, or DDP/FSDP under torchrun)")
    p.add_argument("--config", help="a run config (.yaml/.toml); default: the built-in defaults")
    p.add_argument("overrides", nargs="*", help="config overrides, e.g. train.max_steps=200 model.n_layer=6")
    p.add_argument("--resume", action="store_true", help="continue the run in train.out_dir from its latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="start again in a run folder that holds a run")
    p.set_defaults(func=run_train)

    p = sub.add_parser("export", help="write a pretrained folder (safetensors + config) from a run's checkpoint")
    p.add_argument("run_dir", help="a training run folder")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--step", type=int, default=None, help="checkpoint step (default: the latest)")
    p.set_defaults(func=run_export)

    p = sub.add_parser("plot", help="draw the loss curves of a training run")
    p.add_argument("run_dir", help="a training run folder")
    p.add_argument("--out", default=None, help="PNG to write (default: RUN_DIR/losses.png)")
    p.set_defaults(func=run_plot)


def run_train(args: argparse.Namespace) -> int:
    from astropt.train.loop import train

    cfg = load_config(args.config, args.overrides)
    run_dir = train(cfg, resume=args.resume, overwrite=args.overwrite)
    print(run_dir / "final")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from astropt.train.export import export

    print(export(args.run_dir, args.out, step=args.step))
    return 0


def run_plot(args: argparse.Namespace) -> int:
    from astropt.train.export import plot

    print(plot(args.run_dir, args.out))
    return 0
