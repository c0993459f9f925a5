"""``astropt data synth``: render the synthetic galaxy survey into prepared shards."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="render a synthetic multi-band galaxy survey with known truth (GalSim)",
        description="Render N synthetic galaxies (images, spectra, photometry, labels) into the "
        "prepared-shard format. Deterministic for a seed; resumes an interrupted run.",
    )
    p.add_argument("--n", type=int, required=True, help="number of objects")
    p.add_argument("--out", required=True, help="output folder (prepared shards)")
    p.add_argument("--seed", type=int, default=0, help="survey seed (default 0)")
    p.add_argument("--image-size", type=int, default=None,
                   help="stamp side in pixels (default: the config's image size, else 64)")
    p.add_argument("--bands", default=None,
                   help="bands from ugrizy in channel order (default: the config's bands, else griz)")
    p.add_argument("--pixel-scale", type=float, default=0.2, help="arcsec per pixel (default 0.2)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="parallel processes (default: all CPUs); the result does not depend on it")
    p.add_argument("--rows-per-shard", type=int, default=512, help="objects per shard file")
    p.add_argument("--rare-fraction", type=float, default=0.01,
                   help="fraction of rare objects (lens, star, edge_on_dust, merger)")
    p.add_argument("--no-spectra", action="store_true", help="images and photometry only")
    p.add_argument("--spectrum-exposure", type=float, default=1.0,
                   help="spectroscopic exposure relative to the default (S/N grows as its square root)")
    p.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                   help="also write a PNG grid of examples (default path: OUT/preview.png)")
    p.add_argument("--config", default=None,
                   help="a run config (YAML/TOML): check the images fit its image modality")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_synth)


def _image_defaults(config_path: str | None) -> tuple[object | None, int | None, str | None]:
    """The model config of ``--config`` and its image modality's size and bands."""
    if config_path is None:
        return None, None, None
    from astropt.config import load_config

    model = load_config(config_path).model
    image = next((m for m in model.modalities if m.kind == "image"), None)
    if image is None:
        return model, None, None
    return model, image.image_size, "".join(image.bands) or None


def run_synth(args: argparse.Namespace) -> int:
    from astropt.data.synthetic import SurveyConfig, check_model_compat, preview, synthesize

    model, size, bands = _image_defaults(args.config)
    image_size = args.image_size or size or 64
    bands = args.bands or bands or "griz"
    settings = SurveyConfig(n=args.n, seed=args.seed, image_size=image_size, bands=bands,
                            pixel_scale=args.pixel_scale, rare_fraction=args.rare_fraction,
                            spectra=not args.no_spectra, rows_per_shard=args.rows_per_shard,
                            spectrum_exposure=args.spectrum_exposure)
    if model is not None:
        check_model_compat(settings, model)  # before anything is written
    start = time.perf_counter()
    manifest = synthesize(args.out, args.n, seed=args.seed, image_size=image_size, bands=bands,
                          workers=args.workers, rows_per_shard=args.rows_per_shard,
                          rare_fraction=args.rare_fraction, pixel_scale=args.pixel_scale,
                          spectra=not args.no_spectra, progress=not args.no_progress,
                          spectrum_exposure=args.spectrum_exposure)
    seconds = time.perf_counter() - start
    size_mb = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file()) / 2**20
    print(f"{manifest.n_objects} objects in {args.out} ({size_mb:.1f} MiB, "
          f"{len(manifest.shards)} shards) in {seconds:.1f} s = {manifest.n_objects / seconds:.0f} galaxies/s")
    if args.preview is not None:
        png = preview(args.out, args.preview or Path(args.out) / "preview.png")
        print(f"preview: {png}")
    return 0
