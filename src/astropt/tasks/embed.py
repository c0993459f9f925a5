"""Stream a dataset through a model into an embeddings table (Parquet), resumably.

Output: one Parquet file with the columns ``id``, ``embedding`` (``fixed_size_list<float32>``;
with ``layer="all"`` one column ``embedding_l{k}`` per block instead), one
``embedding_{modality}`` column per modality for multimodal models, and the data's label
columns. The schema metadata (key ``astropt``) records the model, data, layer and pooling.

Resumability: objects are cut into parts of ``part_size`` consecutive indices. Part ``k`` is
written atomically to ``OUT.parts/part-{k:06d}.parquet``; a rerun skips finished parts.
Under ``torchrun`` rank ``r`` of ``W`` computes the parts with ``k % W == r``, so ranks never
write the same file. When all parts exist, rank 0 merges them into ``OUT`` (atomically,
one part in memory at a time) and removes the parts folder.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from tqdm.auto import tqdm

from astropt.atomic import atomic_path, atomic_write_text
from astropt.config import COMPILE_MIN_OBJECTS, PRECISIONS, config_hash
from astropt.data.shards import ShardSet
from astropt.errors import DataError
from astropt.locks import output_lock
from astropt.model import AstroPT
from astropt.model.astropt import main_embedding
from astropt.runtime import autocast, barrier, resolve_dtype, setup, teardown, tune_cpu_allocator
from astropt.tasks.common import load_model, model_batches, used_modalities
from astropt.tasks.embeddings import (  # noqa: F401  (re-exported: readers of what embed writes)
    MANIFEST_NAME,
    META_KEY,
    Embeddings,
    check_finite_rows,
    iter_embeddings,
    load_embeddings,
)
from astropt.tasks.model_data import shards_for

log = logging.getLogger(__name__)

def embed(
    model: AstroPT | str | os.PathLike,
    data: ShardSet | str | os.PathLike,
    out: str | os.PathLike,
    layer: int | str | None = None,
    pool: str | None = None,
    batch_size: int = 64,
    dtype: str = "auto",
    device: str = "auto",
    part_size: int = 4096,
    modalities: list[str] | None = None,
    indices: np.ndarray | None = None,
    progress: bool = True,
    limit: int = 0,
    precision: str = "float32",
    stream: bool = False,
    compile: bool | None = None,
) -> Path:
    """Embed every object of ``data`` (or ``indices`` of it) with ``model`` into ``out``.

    Args:
        layer: block index (default: the model's embedding layer) or ``"all"``.
        pool: one of ``astropt.config.POOLS`` (default: the model's); ``none`` stores each
            object's token embeddings, ``(tokens, width)`` per row, for the attention probe
            (modalities of a fixed number of tokens, e.g. images).
        dtype: ``auto`` (bf16 where native, else fp32: the training rule of
            ``astropt.runtime``), ``float32``, ``bfloat16`` or ``float16``.
        part_size: objects per resumable part (memory is bounded by one part).
        modalities: model modalities to feed (default: all of the model's).
        indices: subset of object indices (e.g. a held-out split), in output order.
        limit: for a raw source (not prepared shards), read at most this many objects.
        precision: ``float32`` or ``float16`` (half the disk) for the stored vectors.
        stream: read a raw source as a stream split by rank, never preparing it on disk
            (a Hugging Face source through ``datasets`` streaming; files, catalogues and
            HDF5 read in place); resumable from the saved stream positions (see
            :mod:`astropt.tasks.embed_stream`).
        compile: compile the model's blocks (``torch.compile``): seconds of compilation
            for faster batches (1.02x for the bf16 24M model on CPU, benchmarks/RESULTS.md);
            None: :func:`resolve_compile` (on for bf16 GPU jobs of many objects, off otherwise).

    ``out`` ending in ``.parquet`` is one merged file; any other name is a partitioned
    dataset: a folder of ``part-NNNNNN.parquet`` files and ``_manifest.json`` (provenance:
    model and its source, weights hash, layer, pooling, dtype, precision, preprocessing,
    row count), which pyarrow, DuckDB, Polars and Hugging Face ``datasets`` open directly,
    with no single-file merge (the shape for surveys of 10^8-10^9 objects).

    On a CPU, glibc's allocator is tuned to keep freed memory for the next batch
    (:func:`astropt.runtime.tune_cpu_allocator`; 1.2-1.8x on the bf16 24M model); setting any
    of glibc's ``MALLOC_*`` variables leaves it as it is.

    ``data`` may be prepared shards or any raw source (a hub dataset id, a folder of
    images, a catalogue): it is then prepared for the model first, as the model's own
    preprocessing record says (see :mod:`astropt.tasks.model_data`).

    Returns:
        The path of the merged Parquet file.
    """
    out = Path(out)
    place = setup(device)  # under torchrun: the process group (Gloo on CPU, NCCL on GPU)
    if place.device.type == "cpu":
        tune_cpu_allocator()  # batches reuse their buffers (a MALLOC_* variable opts out)
    try:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if stream:
            from astropt.tasks.embed_stream import StreamJob, embed_stream

            job = StreamJob(layer, pool, batch_size, dtype, part_size, modalities, progress, limit, precision, compile)
            return embed_stream(model, data, out, job, place.device, place.rank, place.world_size)
        return _embed(model, data, out, layer, pool, batch_size, dtype, place.device, part_size, modalities,
                      indices, progress, limit, place.rank, place.world_size, precision, compile)
    finally:
        teardown()  # only a group that setup() created


def _embed(model, data, out: Path, layer, pool, batch_size: int, dtype: str, device, part_size: int,
           modalities, indices, progress: bool, limit: int, rank: int, world: int, precision: str,
           compile: bool | None = None) -> Path:
    named = None if isinstance(model, AstroPT) else str(model)
    model = load_model(model, device).to(device).eval()
    if rank == 0:  # a raw source is prepared once, by rank 0; the others open it after
        data = shards_for(model, data, out, limit=limit)
    barrier()
    if rank != 0:
        data = shards_for(model, data, out, limit=limit, prepare_missing=False)
    configs = used_modalities(model, data, modalities)
    indices = np.arange(len(data)) if indices is None else np.asarray(indices, dtype=np.int64)
    if len(indices) == 0:
        raise DataError(f"data {getattr(data, 'directory', data)}: nothing to embed (0 objects)")
    all_layers = str(layer) == "all"
    layer = None if all_layers or layer is None else int(layer)
    pool = pool or model.config.embed_pool
    amp = resolve_dtype(dtype, device, model.config.n_embd)
    compile = resolve_compile(compile, len(indices), device, amp)
    meta = {
        **model_meta(model, named, layer, all_layers, pool, configs, amp, precision, part_size, compile),
        "data": str(getattr(data, "directory", "")),
        "data_fingerprint": data.fingerprint(),
        "n_objects": int(len(indices)),
        "indices_hash": _array_hash(indices),
    }
    # One writer per output: rank 0 holds the lock (ranks write disjoint parts under it).
    with output_lock(out) if rank == 0 else contextlib.nullcontext():
        # Weights cast once to the compute dtype (autocast then casts only the inputs).
        _embed_parts(model.inference_copy(amp, compile), data, configs, indices, out, meta, layer, all_layers, batch_size,
                     amp, device, progress, rank, world)
    return out


def resolve_compile(compile: bool | None, n_objects: int | None, device: Any, dtype: torch.dtype) -> bool:
    """Whether an embedding job compiles its model: as asked, or (None) on a GPU when it has
    :data:`~astropt.config.COMPILE_MIN_OBJECTS` objects or more and computes in bf16. On a
    CPU only when asked: once the allocator keeps the batches' buffers, compiling the bf16
    24M model was measured 1.02x (benchmarks/RESULTS.md), not worth its seconds of
    compilation below about 10^6 objects. A stream's length is unknown: it compiles only
    when asked."""
    if compile is not None:
        return compile
    large = n_objects is not None and n_objects >= COMPILE_MIN_OBJECTS
    return large and dtype == torch.bfloat16 and str(device).startswith("cuda")


def model_meta(model: AstroPT, named: str | None, layer: int | None, all_layers: bool, pool: str,
               configs: list, amp: torch.dtype, precision: str, part_size: int,
               compiled: bool = False) -> dict[str, Any]:
    """The provenance of an embedding job that depends on the model and the settings."""
    extra = getattr(model, "pretrained_extra", {})
    return {
        "model": config_hash(model.config),
        "weights": _weights_signature(model),
        "precision": precision,
        "source": extra.get("source") or named,
        "preprocessing": extra.get("preprocessing"),
        "part_size": int(part_size),
        "layer": "all" if all_layers else (default_layers(model.config) if layer is None else layer),
        "pool": pool,
        "modalities": [m.name for m in configs],
        "dtype": str(amp).removeprefix("torch."),
        "compile": bool(compiled),  # the compiled kernels round bf16 differently: not mixed in one output
    }


def default_layers(config) -> int | list[int]:
    """The block(s) of a model's default embedding, as the metadata records them: the one
    block, or the list ``embed_layers`` whose pooled outputs it concatenates."""
    return list(config.embed_layers) if config.embed_layers else config.default_embed_layer


def _embed_parts(model: AstroPT, data: ShardSet, configs: list, indices: np.ndarray, out: Path,
                 meta: dict[str, Any], layer: int | None, all_layers: bool, batch_size: int, amp,
                 device: str, progress: bool, rank: int, world: int) -> None:
    """Compute this rank's missing parts, then (rank 0) merge every part into ``out`` or,
    for a partitioned output, write its manifest."""
    pool, part_size = meta["pool"], meta["part_size"]
    if rank == 0:  # may clear parts of another job: before any rank writes
        prepare_parts_folder(out, meta)
    barrier()
    parts_dir = parts_folder(out)
    n_parts = (len(indices) + part_size - 1) // part_size
    mine = [k for k in range(n_parts) if k % world == rank]
    todo = [k for k in mine if not _part_complete(parts_dir, k, indices, part_size)]
    if len(todo) < len(mine):
        log.info("resuming: %d of %d parts already done", len(mine) - len(todo), len(mine))
    bar = tqdm(total=sum(len(_part_range(k, indices, part_size)) for k in todo), disable=not progress,
               desc=f"embed {out.name}", unit="obj")
    for k in todo:
        part = _part_range(k, indices, part_size)
        table = _embed_part(model, data, configs, part, layer, all_layers, pool, batch_size, device, amp, bar,
                            meta["precision"])
        write_part(parts_dir / part_name(k), table, meta)
        _part_written(k)
    bar.close()
    barrier()
    if rank == 0:
        finish(out, [part_name(k) for k in range(n_parts)], meta)
    barrier()


def meta_name(model: AstroPT) -> str:
    """A short name of a model for messages."""
    return f"{type(model).__name__}({config_hash(model.config)[:8]})"


def write_part(path: Path, table: pa.Table, meta: dict[str, Any]) -> None:
    """One part file, atomically, with the job's metadata in its schema."""
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata({META_KEY: json.dumps(meta).encode()}), str(tmp))


def _part_written(k: int) -> None:
    """Hook called after each part is on disk (tests use it to simulate a kill)."""


def _weights_signature(model: AstroPT) -> str:
    """A cheap fingerprint of the weights, so parts of another model are never reused."""
    with torch.no_grad():
        total = sum(float(p.detach().double().abs().sum()) for p in model.parameters())
    return f"{total:.10e}"


def _array_hash(a: np.ndarray) -> str:
    import hashlib

    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


JOB_NAME = "_job.json"


def partitioned(out: str | os.PathLike) -> bool:
    """Whether ``out`` names a partitioned dataset (a folder) rather than one Parquet file."""
    return Path(out).suffix.lower() not in (".parquet", ".pq")


def parts_folder(out: Path) -> Path:
    return out if partitioned(out) else out.with_name(out.name + ".parts")


def part_name(k: int) -> str:
    """File name of part ``k`` (the manifest lists the parts in this order)."""
    return f"part-{k:06d}.parquet"


def finish(out: Path, names: list[str], meta: dict[str, Any]) -> None:
    """Rank 0, once every part exists: the manifest of a partitioned ``out``, or the merge
    of the parts into one file."""
    if partitioned(out):
        _write_manifest(out, names, meta)
    else:
        _merge(parts_folder(out), out, names, meta)


def _write_manifest(out: Path, names: list[str], meta: dict[str, Any]) -> None:
    paths = [out / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{out}: parts {missing[:5]} are missing; rerun to finish them")
    rows = [pq.ParquetFile(str(p)).metadata.num_rows for p in paths]
    manifest = {"format": "astropt-embeddings", "version": 1, **meta, "n_rows": int(sum(rows)),
                "parts": [{"file": p.name, "rows": r} for p, r in zip(paths, rows, strict=True)]}
    atomic_write_text(out / MANIFEST_NAME, json.dumps(manifest, indent=2))
    log.info("wrote %s (%d objects in %d parts)", out, manifest["n_rows"], len(names))


def prepare_parts_folder(out: Path, meta: dict[str, Any]) -> Path:
    parts_dir = parts_folder(out)
    meta_path = parts_dir / JOB_NAME
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        if old != meta:
            changed = sorted(k for k in meta if old.get(k) != meta[k])
            log.warning("%s: unfinished parts of a different job (%s differ); starting over", parts_dir, changed)
            shutil.rmtree(parts_dir)
    parts_dir.mkdir(parents=True, exist_ok=True)
    if not meta_path.is_file():
        atomic_write_text(meta_path, json.dumps(meta, indent=2))
    return parts_dir


def _part_range(k: int, indices: np.ndarray, part_size: int) -> np.ndarray:
    return indices[k * part_size : (k + 1) * part_size]


def _part_complete(parts_dir: Path, k: int, indices: np.ndarray, part_size: int) -> bool:
    path = parts_dir / part_name(k)
    if not path.is_file():
        return False
    try:
        rows = pq.ParquetFile(str(path)).metadata.num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        log.warning("part %s is unreadable (%s); recomputing it", path, exc)
        return False
    return rows == len(_part_range(k, indices, part_size))


def _embed_part(model: AstroPT, data: ShardSet, configs: list, part: np.ndarray, layer: int | None,
                all_layers: bool, pool: str, batch_size: int, device: str, amp: torch.dtype, bar: tqdm,
                precision: str = "float32") -> pa.Table:
    """Embeddings + labels of one part of prepared data as an Arrow table."""
    batches = ((rows["id"], batch) for _, rows, batch in model_batches(data, part, batch_size, configs, device))
    ids, vectors = embed_batches(model, batches, layer, all_layers, pool, device, amp, bar,
                                 getattr(data, "directory", "data"))
    rows = data.get_batch(part, fields=[]) if data.label_names else {}
    return embeddings_table(ids, vectors, {name: pa.array(rows[name]) for name in data.label_names}, precision)


def embed_batches(model: AstroPT, batches, layer: int | None, all_layers: bool, pool: str, device: str,
                  amp: torch.dtype, bar: tqdm, where: Any) -> tuple[list[str], dict[str, np.ndarray]]:
    """Ids and ``(n, d)`` float32 vector columns of ``(ids, model batch)`` pairs, checked finite."""
    columns: dict[str, list[np.ndarray]] = {}
    ids: list[str] = []
    for batch_ids, batch in batches:
        for name, vec in embed_batch(model, batch, layer, all_layers, pool, device, amp).items():
            check_finite_rows(vec, list(batch_ids), f"model {meta_name(model)} on {where}")
            columns.setdefault(name, []).append(vec)
        ids.extend(batch_ids)
        bar.update(len(batch_ids))
    return ids, {name: np.concatenate(chunks) for name, chunks in columns.items()}


def embeddings_table(ids: list[str], vectors: dict[str, np.ndarray], labels: dict[str, pa.Array],
                     precision: str = "float32") -> pa.Table:
    """The output table of some objects: ``id``, one fixed-size-list column per vector (token
    embeddings ``(n, tokens, width)``: a fixed-size list of ``tokens`` lists of ``width``), labels."""
    table: dict[str, pa.Array] = {"id": pa.array(ids, pa.string())}
    for name, mat in vectors.items():
        mat = mat.astype(precision)
        column = pa.array(mat.reshape(-1))
        for size in reversed(mat.shape[1:]):
            column = pa.FixedSizeListArray.from_arrays(column, size)
        table[name] = column
    return pa.table({**table, **labels})


def embed_batch(
    model: AstroPT,
    batch: dict[str, torch.Tensor],
    layer: int | None = None,
    all_layers: bool = False,
    pool: str | None = None,
    device: str = "cpu",
    amp: torch.dtype = torch.float32,
) -> dict[str, np.ndarray]:
    """Embedding columns of one batch: ``embedding`` (or ``embedding_l{k}``) [+ per modality];
    ``(B, tokens, width)`` token embeddings with pool ``none``."""
    pool = pool or model.config.embed_pool
    if pool == "none":
        _refuse_padded_tokens(batch)
    with torch.no_grad(), autocast(device, amp):
        if all_layers:
            per_layer = model.embed_all_layers(batch, pool=pool)
            return {f"embedding_l{k}": main_embedding(d).float().cpu().numpy() for k, d in enumerate(per_layer)}
        out = model.embed(batch, layer=layer, pool=pool)
    cols = {"embedding": main_embedding(out).float().cpu().numpy()}
    if len(out) > 1:
        cols.update({f"embedding_{k}": v.float().cpu().numpy() for k, v in out.items() if k != "joint"})
    return cols


def _refuse_padded_tokens(batch: dict[str, torch.Tensor]) -> None:
    """Token embeddings are stored as ``(tokens, width)`` per object: every object of a
    modality must have all its tokens (no padding)."""
    padded = [k.removesuffix("_mask") for k, v in batch.items()
              if k.endswith("_mask") and isinstance(v, torch.Tensor) and not bool(v.all())]
    if padded:
        raise DataError(f"pool 'none': modality {padded[0]!r} has objects with fewer tokens than others (padded); "
                        "token embeddings are stored for modalities of a fixed number of tokens (images): "
                        "embed with a pooling, or with --modalities of fixed length")


def _merge(parts_dir: Path, out: Path, names: list[str], meta: dict[str, Any]) -> None:
    paths = [parts_dir / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise DataError(f"{parts_dir}: parts {missing[:5]} are missing; rerun to finish them")
    schema = pq.read_schema(str(paths[0])).with_metadata({META_KEY: json.dumps(meta).encode()})
    with atomic_path(out) as tmp, pq.ParquetWriter(str(tmp), schema) as writer:
        for path in paths:  # one part in memory at a time
            writer.write_table(pq.read_table(str(path)).replace_schema_metadata(schema.metadata))
    shutil.rmtree(parts_dir)
    log.info("wrote %s (%d parts)", out, len(names))
