"""Search at scale: exact vs approximate FAISS indexes on clustered random vectors.

    python -m benchmarks.search_scale [--sizes 100000 1000000] [--dim 128] [--json out.json]

For each size and index kind (flat = exact; hnsw; ivfpq): build time, memory of the index,
query latency (1000 queries, k = 10, one thread per query batch as FAISS schedules it) and
recall@10 against exact search. Vectors are drawn around 1000 cluster centres in a 16-dimensional
subspace (embeddings have a low intrinsic dimension; many similar objects), L2-normalised
(cosine search).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from astropt.tasks import ann


def clustered(n: int, d: int, seed: int = 0, centres: int = 1000, latent: int = 16) -> np.ndarray:
    """Clusters in a ``latent``-dimensional space embedded in ``d`` dimensions (embeddings
    have a low intrinsic dimension), plus a little isotropic noise."""
    rng = np.random.default_rng(seed)
    basis = np.random.default_rng(0).normal(size=(latent, d)).astype(np.float32)
    c = np.random.default_rng(1).normal(size=(centres, latent)).astype(np.float32)
    z = c[rng.integers(0, centres, n)] + 0.3 * rng.normal(size=(n, latent)).astype(np.float32)
    x = z @ basis + 0.05 * rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(x: np.ndarray, kind: str, queries: np.ndarray, exact) -> dict:
    t0 = time.perf_counter()
    sample = x[np.random.default_rng(1).choice(len(x), size=min(len(x), 65536), replace=False)]
    index = ann.build((x[i : i + 100_000] for i in range(0, len(x), 100_000)), len(x), x.shape[1], kind,
                      "cosine", train_sample=sample)
    build_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    index.search(queries, 10)
    per_query_ms = (time.perf_counter() - t0) / len(queries) * 1e3
    import faiss

    return {"kind": kind, "n": len(x), "build_s": round(build_s, 2), "query_ms": round(per_query_ms, 4),
            "index_mb": round(faiss.serialize_index(index).nbytes / 2**20, 1),
            "recall_at_10": 1.0 if exact is None else round(ann.recall_at_k(index, exact, queries, 10), 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    rows = []
    for n in args.sizes:
        x = clustered(n, args.dim)
        queries = clustered(1000, args.dim, seed=2)
        exact = ann.build([x], n, args.dim, "flat", "cosine")
        rows.append(measure(x, "flat", queries, None))
        for kind in ("hnsw", "ivfpq"):
            rows.append(measure(x, kind, queries, exact))
        for row in rows[-3:]:
            print(f"{row['n']:>9} {row['kind']:>6}  build {row['build_s']:>7.2f} s  query {row['query_ms']:>8.4f} ms"
                  f"  index {row['index_mb']:>8.1f} MB  recall@10 {row['recall_at_10']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"dim": args.dim, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
