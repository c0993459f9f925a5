"""``astropt embed|probe|finetune|search|anomalies|generate|map|demo``: using a model.

Each command parses its arguments, calls the library function of the same name in
``astropt.tasks`` and prints the result (JSON or a short table).
"""

from __future__ import annotations

import argparse
import json

from astropt.config import COMPILE_MIN_OBJECTS, DTYPE_NAMES, POOLS, PRECISIONS, PROBES
from astropt.tasks.ann import INDEX_KINDS

FUNCTION_DEFAULT = "default: the function's"
ATTENTION_OPTIONS = ("queries", "hidden", "max_epochs", "patience")
MODEL_HELP = ("pretrained folder, reference ckpt.pt, or hub model org/name[/subfolder][@revision] "
              "(e.g. Smith42/astroPT_v2.0/astropt/095M)")


def _print(result) -> None:
    print(json.dumps(result, indent=2, default=str))


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options the user gave (None: not given), so the function's own defaults apply."""
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def register(sub: argparse._SubParsersAction) -> None:
    _embed(sub)
    _probe(sub)
    _finetune(sub)
    _search(sub)
    _anomalies(sub)
    _generate(sub)
    _map(sub)
    _demo(sub)


def _embed(sub) -> None:
    p = sub.add_parser("embed", help="embed a dataset into a Parquet table (resumable)")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("data", help="prepared shard folder, or a raw source (hub dataset id, folder of "
                   "FITS/JPEG files, catalogue), prepared for the model first")
    p.add_argument("--out", required=True,
                   help="OUT.parquet: one file; any other name: a partitioned dataset folder (parts + _manifest.json)")
    p.add_argument("--layer", default=None, help="block index or 'all' (default: the model's)")
    p.add_argument("--pool", choices=POOLS, default=None, help="token pooling (default: the model's)")
    p.add_argument("--batch-size", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--dtype", default=None, choices=DTYPE_NAMES,
                   help="auto: bf16 where native, else fp32, as in training (default: auto)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, ... (default: auto)")
    p.add_argument("--part-size", type=int, default=None, help=f"objects per resumable part ({FUNCTION_DEFAULT})")
    p.add_argument("--modalities", nargs="+", default=None, help="model modalities to feed")
    p.add_argument("--limit", type=int, default=None, help="raw sources: read at most this many objects")
    p.add_argument("--precision", choices=PRECISIONS, default=None,
                   help="stored vectors: float32 (default) or float16 (half the disk)")
    p.add_argument("--stream", action="store_true", default=None,
                   help="read a raw source as a stream split by rank (hub ids and Parquet through HF datasets "
                   "streaming; files read in place), never prepared on disk; a rerun resumes where it stopped")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="torch.compile the model's blocks: seconds of compilation for faster batches "
                   f"(default: on for bf16 GPU jobs of {COMPILE_MIN_OBJECTS:,} objects or more; CPUs and streams: "
                   "when asked)")
    p.set_defaults(func=run_embed)


def run_embed(args) -> int:
    from astropt.tasks.embed import embed

    out = embed(args.model, args.data, args.out,
                **_given(args, "layer", "pool", "batch_size", "dtype", "device", "part_size", "modalities", "limit", "precision",
                       "stream", "compile"))
    print(out)
    return 0


def _probe(sub) -> None:
    p = sub.add_parser("probe", help="cross-validated probes of labels from embeddings")
    p.add_argument("embeddings", help="Parquet file from `astropt embed`")
    p.add_argument("--target", action="append", default=None, help="label (repeat; default: all)")
    p.add_argument("--probe", "--model", dest="model", choices=PROBES, default="ridge",
                   help="ridge/linear/mlp on pooled vectors; attention: a pooling learned with the label, on "
                   "token embeddings (`astropt embed --pool none`)")
    for name in ATTENTION_OPTIONS:  # fields of astropt.tasks.attention_probe.AttentionProbeConfig
        p.add_argument(f"--attn-{name.replace('_', '-')}", dest=f"attn_{name}", type=int, default=None,
                       help=f"attention probe: {name} ({FUNCTION_DEFAULT})")
    p.add_argument("--attn-with-pool", choices=[p for p in POOLS if p != "none"], default=None,
                   help="attention probe: a fixed pooling whose vector the read-out sees too (default: none)")
    p.add_argument("--seed", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--layer", default=None, help="'all' for per-layer probing, or a block index")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--out", default="probe", help="folder for probe.json and figures")
    p.add_argument("--no-uncertainty", action="store_true", help="skip the Gaussian uncertainty head")
    p.set_defaults(func=run_probe)


def run_probe(args) -> int:
    from astropt.tasks.attention_probe import AttentionProbeConfig
    from astropt.tasks.probe import probe

    options = {k.removeprefix("attn_"): v for k, v in vars(args).items() if k.startswith("attn_") and v is not None}
    res = probe(args.embeddings, args.target, args.model, args.layer, args.folds, args.out,
                uncertainty=not args.no_uncertainty, attention=AttentionProbeConfig(**options),
                **_given(args, "seed"))
    keys = ("r2", "rmse", "nmad", "outlier_fraction", "coverage_68", "coverage_95", "accuracy", "f1_macro")
    print(f"{'target':<18}" + "".join(f"{k:>17}" for k in keys))
    for name, m in res["targets"].items():
        print(f"{name:<18}" + "".join(f"{m[k]:>17.4f}" if k in m else f"{'':>17}" for k in keys))
    print(f"results in {args.out}/probe.json")
    return 0


def _finetune(sub) -> None:
    p = sub.add_parser("finetune", help="finetune a task head with LoRA adapters or fully")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("data")
    p.add_argument("--target", action="append", required=True, help="label (repeat)")
    p.add_argument("--lora-rank", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--full", action="store_true", help="train all weights instead of LoRA adapters")
    p.add_argument("--epochs", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--batch-size", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--lr", type=float, default=None, help="default: 1e-3 with LoRA, 1e-4 full")
    p.add_argument("--patience", type=int, default=None, help=FUNCTION_DEFAULT)
    p.add_argument("--n-labels", type=int, default=None, help="cap on training labels")
    p.add_argument("--label-curve", action="store_true", help="metric vs 100/1k/10k labels")
    p.add_argument("--val-in-budget", action="store_true", default=None,
                   help="--n-labels / the curve's sizes count the validation labels too")
    p.add_argument("--min-steps", type=int, default=None, help="at least this many optimizer steps (small label sets)")
    p.add_argument("--layer", type=int, default=None, help="block index (default: the model's)")
    p.add_argument("--pool", choices=[p for p in POOLS if p != "none"], default=None,
                   help="token pooling (default: the model's)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, ... (default: auto)")
    p.add_argument("--out", default="finetune")
    p.set_defaults(func=run_finetune)


def run_finetune(args) -> int:
    from astropt.tasks.finetune import finetune, label_efficiency

    kwargs = dict(full=args.full, **_given(args, "lora_rank", "epochs", "batch_size", "lr", "patience",
                                           "min_steps", "val_in_budget", "layer", "pool", "device"))
    if args.label_curve:
        _print(label_efficiency(args.model, args.data, args.target, args.out, **kwargs))
        return 0
    res = finetune(args.model, args.data, args.target, args.out, **_given(args, "n_labels"), **kwargs)
    _print({k: res[k] for k in ("mode", "n_train", "n_test", "trainable_parameters", "metrics")})
    return 0


def _search(sub) -> None:
    p = sub.add_parser("search", help="nearest neighbours of an object or image (FAISS)")
    p.add_argument("embeddings")
    p.add_argument("--query", required=True, help="object id, or an image file (with --model)")
    p.add_argument("-k", type=int, default=16)
    p.add_argument("--metric", choices=["cosine", "l2"], default="cosine")
    p.add_argument("--index", choices=INDEX_KINDS, default="auto",
                   help="exact (flat) or approximate (hnsw, ivfpq); auto: by the number of objects")
    p.add_argument("--model", default=None, help="model that made the embeddings (image queries)")
    p.add_argument("--data", default=None, help="data folder for thumbnails (default: the embedded one)")
    p.add_argument("--out", default="search.png", help="PNG grid of the query and neighbours")
    p.set_defaults(func=run_search)


def run_search(args) -> int:
    from astropt.tasks.search import search

    for hit in search(args.embeddings, args.query, args.k, args.metric, model=args.model, data=args.data,
                      out=args.out, index=args.index):
        print(f"{hit['rank']:>4}  {hit['id']:<24} {hit['score']:.4f}")
    return 0


def _anomalies(sub) -> None:
    p = sub.add_parser("anomalies", help="rank objects by how anomalous they are")
    p.add_argument("embeddings")
    p.add_argument("--top", type=int, default=50)
    p.add_argument("-k", type=int, default=10, help="neighbours of the kNN score")
    p.add_argument("--metric", choices=["cosine", "l2"], default="l2", help="distance between standardised embeddings (l2 keeps their norm: best on the synthetic survey)")
    p.add_argument("--by", choices=["knn", "loss", "both"], default="knn")
    p.add_argument("--model", default=None, help="needed for --by loss/both")
    p.add_argument("--data", default=None)
    p.add_argument("--out", default="anomalies")
    p.set_defaults(func=run_anomalies)


def run_anomalies(args) -> int:
    from astropt.tasks.anomaly import anomalies

    res = anomalies(args.embeddings, args.top, args.k, args.metric, args.by, args.model, args.data, args.out)
    for item in res["top"][:20]:
        print(f"{item['rank']:>4}  {item['id']:<24} {item['score']:.4f}")
    if "quality" in res:
        _print(res["quality"])
    return 0


def _generate(sub) -> None:
    p = sub.add_parser("generate", help="complete an image from its first tokens (or cross-modal, or text)")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("image", help="image file (.npy/FITS/PNG/JPEG) or a data folder (with --id, --to or --text)")
    p.add_argument("--id", default=None, help="object id in a data folder (default: the first)")
    p.add_argument("--keep", type=float, default=0.5, help="fraction of tokens kept")
    p.add_argument("--temperature", type=float, default=0.0, help="scale of noise added per token")
    p.add_argument("--from", dest="source_modality", default=None, help="source modality")
    p.add_argument("--to", dest="target_modality", default=None, help="predict this modality instead")
    p.add_argument("-n", type=int, default=16, help="objects for cross-modal prediction or --text")
    p.add_argument("--text", action="store_true",
                   help="LLM backbone: answer in text after each object's observations (answers.json)")
    p.add_argument("--prompt", default="", help="with --text: words that open the answer")
    p.add_argument("--max-new-tokens", type=int, default=16, help="with --text: longest answer in tokens")
    p.add_argument("--out", default="generate")
    p.set_defaults(func=run_generate)


def run_generate(args) -> int:
    from astropt.tasks.generate import answer_text, generate

    if args.text:
        _print(answer_text(args.model, args.image, args.prompt, args.n, args.max_new_tokens,
                           args.temperature, out=args.out))
        return 0
    _print(generate(args.model, args.image, args.keep, args.out, args.id, args.temperature,
                    source_modality=args.source_modality, target_modality=args.target_modality, n=args.n))
    return 0


def _map(sub) -> None:
    p = sub.add_parser("map", help="2-D map of embeddings coloured by a label")
    p.add_argument("embeddings")
    p.add_argument("--color-by", default=None)
    p.add_argument("--method", choices=["pca", "umap"], default="pca")
    p.add_argument("--data", default=None)
    p.add_argument("--thumbnails", type=int, default=16)
    p.add_argument("--out", default="map.png")
    p.set_defaults(func=run_map)


def run_map(args) -> int:
    from astropt.tasks.map import embedding_map

    _print(embedding_map(args.embeddings, args.out, args.color_by, args.method, args.data, args.thumbnails))
    return 0


def _demo(sub) -> None:
    p = sub.add_parser("demo", help="the main job: synthesise, pretrain, embed, probe, report")
    p.add_argument("--out", default="demo")
    p.add_argument("--config", default="tiny-cpu", help="named config or config file")
    p.add_argument("-n", type=int, default=None, help="objects in the synthetic survey")
    p.add_argument("--steps", type=int, default=None, help="pretraining steps")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (a minute)")
    p.set_defaults(func=run_demo_cli)


def run_demo_cli(args) -> int:
    from astropt.tasks.demo import run_demo

    report = run_demo(out=args.out, config=args.config, n=args.n, steps=args.steps, quick=args.quick)
    print(report["table_text"])
    print(f"report: {report['html']}")
    return 0
