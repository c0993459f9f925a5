"""``astropt convert ckpt.pt --out DIR``: import a reference checkpoint as a pretrained folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a reference AstroPT ckpt.pt into a pretrained folder (safetensors + config.json)",
        description="Reads the checkpoint without executing pickled code; merges LoRA weights.",
    )
    p.add_argument("checkpoint", help="reference ckpt.pt file")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--lora-scale", type=float, default=None,
                   help="override the LoRA scaling (default: as the reference version built it)")
    p.set_defaults(func=run_convert)


def run_convert(args: argparse.Namespace) -> int:
    from astropt.model import convert_reference_checkpoint

    out = convert_reference_checkpoint(args.checkpoint, args.out, lora_scale=args.lora_scale)
    print(f"wrote {out}")
    return 0
