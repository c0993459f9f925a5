"""Embedding a stream: a source read where it is, split by rank, embedded part by part,
never prepared (copied) on disk.

The stream is a Hugging Face ``IterableDataset``: the dataset itself for a Hugging Face
source (hub id, Parquet files, ``save_to_disk`` folder: ``datasets`` streaming), or the
object indices of any other source (a folder of FITS/JPEG/NPY files, a catalogue, an HDF5
file), each rank reading the files of its own objects. Rank ``r`` of ``W`` reads its split of
the stream (``datasets.distributed.split_dataset_by_node``: whole shards per rank when their
number divides by ``W``, as it does for a local dataset or a non-Hugging Face source, which are
cut into a multiple of ``W`` shards; else every ``W``-th example), cuts it
into parts of ``part_size`` objects and writes its ``k``-th part as part number ``k * W + r``
(the manifest lists the parts by number). After each part the rank's position in its split
(the dataset's ``state_dict()`` and the count of examples consumed) is saved atomically in
``_stream-rank{r}.json`` beside the parts, so a rerun of the same command resumes after the
last complete part: a part written whose position was not saved yet is written again,
identically, under the same name; nothing is duplicated or missing. A resume needs the same
world size (the split depends on it).

The schema (array shapes, label types) comes from the first objects of the stream, as
``prepare`` takes it; objects that cannot be read or do not fit are skipped and listed in
the manifest's ``rejects``. Objects keep their ids; a Hugging Face dataset without an id
column is numbered by position, which is only defined for one process.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pyarrow as pa
from tqdm.auto import tqdm

from astropt.atomic import atomic_write_text
from astropt.data.loader import Collator, to_device
from astropt.data.schema import (
    check_record,
    coerce_labels,
    infer_label_types,
    infer_specs,
    sample_records,
)
from astropt.data.sources import ObjectError, Source, detect_kind, open_source
from astropt.data.sources.base import Result
from astropt.data.sources.hf import HFSource
from astropt.errors import DataError
from astropt.locks import output_lock
from astropt.model import AstroPT
from astropt.runtime import barrier, resolve_dtype
from astropt.tasks import embed as embed_module
from astropt.tasks.common import load_model, used_modalities
from astropt.tasks.model_data import source_config_for

log = logging.getLogger(__name__)

LABEL_ARROW = {"float64": pa.float64(), "int64": pa.int64(), "string": pa.string()}


@dataclass
class StreamJob:
    """The settings of :func:`astropt.tasks.embed.embed` that a stream job uses."""

    layer: int | str | None = None
    pool: str | None = None
    batch_size: int = 64
    dtype: str = "auto"
    part_size: int = 4096
    modalities: list[str] | None = None
    progress: bool = True
    limit: int = 0
    precision: str = "float32"
    compile: bool | None = None  # None: embed.resolve_compile (a stream compiles only when asked)


def state_path(folder: Path, rank: int) -> Path:
    return folder / f"_stream-rank{rank:05d}.json"


@dataclass
class Stream:
    """A source as a stream: the ``IterableDataset`` a rank splits and iterates, and how a
    list of its rows becomes ``(index, record or ObjectError)`` pairs."""

    source: Source
    dataset: Any
    records: Callable[[list[dict[str, Any]], int], Iterator[tuple[int, Result]]]
    has_ids: bool


def shard_count(n: int, span: int, world: int) -> int:
    """Shards of a stream of ``n`` objects read by ``world`` ranks: a multiple of ``world``
    (whole shards per rank) of about ``span`` objects each, at most one per object."""
    count = max(1, -(-n // (span * world))) * world
    return count if count <= n else max(1, n)


def open_stream(model: AstroPT, data: str | os.PathLike, limit: int = 0, span: int = 4096,
                world: int = 1) -> Stream:
    """The source at ``data``, read as ``model`` expects it, as a stream (see module
    docstring). A source that can be read at random (a local dataset or any non-Hugging Face
    source) is cut into :func:`shard_count` shards, so each of the ``world`` ranks reads only
    its own objects; a hub or Parquet stream is split by its files."""
    import datasets

    cfg = replace(source_config_for(model, data, limit=limit), streaming=True)
    if detect_kind(cfg) == "hf":
        source = HFSource(replace(cfg, kind="hf"))
        if source.table is not None:  # a save_to_disk folder: cut it into shards
            table = source.table.select(range(min(limit, len(source.table)))) if limit else source.table
            dataset = table.to_iterable_dataset(num_shards=shard_count(len(table), span, world))
        else:
            dataset = source.dataset.take(limit) if limit else source.dataset
        return Stream(source, dataset, source.records, source.id_name is not None)
    source = open_source(cfg)
    n = len(source)  # config.limit applied
    bounds = np.linspace(0, n, shard_count(n, span, world) + 1).round().astype(int).tolist()
    spans = list(itertools.pairwise(bounds))
    features = datasets.Features({"index": datasets.Value("int64")})
    dataset = datasets.IterableDataset.from_generator(_indices, features=features, gen_kwargs={"spans": spans})
    return Stream(source, dataset, functools.partial(_read_rows, source), True)


def _indices(spans: list[tuple[int, int]]) -> Iterator[dict[str, int]]:
    for start, stop in spans:
        for index in range(start, stop):
            yield {"index": index}


def _read_rows(source: Source, rows: list[dict[str, Any]], start: int) -> Iterator[tuple[int, Result]]:
    for row in rows:
        yield from source.results(row["index"], row["index"] + 1)


def embed_stream(model: AstroPT | str | os.PathLike, data: str | os.PathLike, out: Path, job: StreamJob,
                 device: str, rank: int, world: int) -> Path:
    """Embed the stream ``data`` into ``out`` (see module docstring); called by ``embed``."""
    named = None if isinstance(model, AstroPT) else str(model)
    model = load_model(model, device).to(device).eval()
    stream = open_stream(model, data, job.limit, job.part_size, world)
    source = stream.source
    if world > 1 and not stream.has_ids:
        raise DataError(f"{data}: no id column {source.config.id_column!r}; a stream without ids can only be "
                        "embedded by one process (objects are then numbered by position)")
    sample = sample_records(source, "skip")
    schema = infer_specs(source, sample), infer_label_types(source, sample)
    configs = used_modalities(model, SimpleNamespace(arrays=schema[0], directory=str(data)), job.modalities)
    all_layers = str(job.layer) == "all"
    layer = None if all_layers or job.layer is None else int(job.layer)
    pool = job.pool or model.config.embed_pool
    amp = resolve_dtype(job.dtype, device, model.config.n_embd)
    job = replace(job, compile=embed_module.resolve_compile(job.compile, None, device, amp))
    meta = {
        **embed_module.model_meta(model, named, layer, all_layers, pool, configs, amp, job.precision, job.part_size,
                                  job.compile),
        "data": str(data), "data_fingerprint": source.fingerprint(0, None), "stream": True,
        "world_size": world, "limit": int(job.limit),
    }
    folder = embed_module.parts_folder(out)
    with output_lock(out) if rank == 0 else contextlib.nullcontext():
        if rank == 0:  # may clear the parts of another job: before any rank writes
            _check_world_size(folder, meta)
            embed_module.prepare_parts_folder(out, meta)
        barrier()
        embedder = _PartEmbedder(model.inference_copy(amp, job.compile), configs, layer, all_layers, pool, job, device, amp,
                                 str(data))
        _embed_rank(stream, schema, embedder, folder, meta, job, rank, world)
        barrier()
        if rank == 0:
            _finish(out, folder, meta, world)
        barrier()
    return out


def _check_world_size(folder: Path, meta: dict[str, Any]) -> None:
    job_path = folder / embed_module.JOB_NAME
    if not job_path.is_file():
        return
    old = json.loads(job_path.read_text())
    if old.get("stream") and old.get("world_size") != meta["world_size"] and any(folder.glob("_stream-rank*.json")):
        raise DataError(
            f"{folder}: the stream positions were saved by {old.get('world_size')} processes and this run has "
            f"{meta['world_size']}; rerun with torchrun --nproc_per_node={old.get('world_size')} to resume, or "
            "delete the folder to start over"
        )


@dataclass
class _PartEmbedder:
    """Records of one part -> its output table (the batch path of ``embed``)."""

    model: AstroPT
    configs: list
    layer: int | None
    all_layers: bool
    pool: str
    job: StreamJob
    device: str
    amp: Any
    where: str

    def __call__(self, records: list[dict[str, Any]], label_types: dict[str, str], bar: tqdm) -> pa.Table:
        collate, size = Collator(self.configs), self.job.batch_size
        batches = ((ids, to_device(batch, self.device)) for batch, ids in
                   (collate(records[i : i + size]) for i in range(0, len(records), size)))
        ids, vectors = embed_module.embed_batches(self.model, batches, self.layer, self.all_layers, self.pool,
                                                  self.device, self.amp, bar, self.where)
        labels = {name: pa.array([r["labels"].get(name) for r in records], LABEL_ARROW[kind])
                  for name, kind in label_types.items()}
        return embed_module.embeddings_table(ids, vectors, labels, self.job.precision)


def _embed_rank(stream: Stream, schema: tuple, embedder: _PartEmbedder, folder: Path, meta: dict[str, Any],
                job: StreamJob, rank: int, world: int) -> None:
    """This rank's split of the stream, part by part, from its saved position."""
    from datasets.distributed import split_dataset_by_node

    state = _read_state(folder, rank)
    if state["done"]:
        return
    split = split_dataset_by_node(stream.dataset, rank=rank, world_size=world)
    if state["dataset"] is not None:
        split.load_state_dict(state["dataset"])
        log.info("rank %d: resuming the stream after %d objects (%d parts)", rank, state["consumed"],
                 len(state["parts"]))
    rows = iter(split)
    bar = tqdm(disable=not job.progress, desc=f"embed {folder.name} (rank {rank})", unit="obj")
    while not state["done"]:
        chunk = list(itertools.islice(rows, job.part_size))
        records, rejects = _checked(stream, chunk, state["consumed"], schema)
        number = len(state["parts"]) * world + rank
        if records:
            embed_module.write_part(folder / embed_module.part_name(number), embedder(records, schema[1], bar), meta)
            state["parts"].append(number)
        state.update(consumed=state["consumed"] + len(chunk), dataset=split.state_dict(),
                     done=len(chunk) < job.part_size, rejects=state["rejects"] + rejects)
        atomic_write_text(state_path(folder, rank), json.dumps(state))
        if records:
            embed_module._part_written(number)
    bar.close()


def _checked(stream: Stream, rows: list[dict[str, Any]], start: int, schema: tuple) -> tuple[list, list]:
    """The records of raw ``rows`` that fit the schema (arrays as float32, labels typed),
    and the rejected ones as ``{"id", "reason"}``."""
    specs, label_types = schema
    source = stream.source
    records, rejects = [], []
    for _, result in stream.records(rows, start):
        try:
            if isinstance(result, ObjectError):
                raise result
            check_record(result, specs, source.config.path)
            coerce_labels(result, label_types, source.config.path, "skip")
        except ObjectError as exc:
            rejects.append({"id": exc.obj_id, "reason": exc.reason})
            continue
        records.append({**result, **{name: np.asarray(result[name], dtype=np.float32) for name in specs}})
    return records, rejects


def _read_state(folder: Path, rank: int) -> dict[str, Any]:
    path = state_path(folder, rank)
    if not path.is_file():
        return {"parts": [], "consumed": 0, "dataset": None, "done": False, "rejects": []}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: the saved stream position is unreadable ({exc}); delete {folder} to "
                        "start over") from None


def _finish(out: Path, folder: Path, meta: dict[str, Any], world: int) -> None:
    states = [_read_state(folder, r) for r in range(world)]
    unfinished = [r for r, s in enumerate(states) if not s["done"]]
    if unfinished:
        raise DataError(f"{folder}: ranks {unfinished} did not finish their stream; rerun to resume")
    numbers = sorted(n for s in states for n in s["parts"])
    if not numbers:
        raise DataError(f"{meta['data']}: nothing to embed (every object was rejected or the stream is empty)")
    rejects = [row for s in states for row in s["rejects"]]
    if rejects:
        log.warning("%d objects rejected, e.g. %s (listed in the manifest)", len(rejects), rejects[:3])
    final = {**meta, "n_objects": sum(s["consumed"] for s in states) - len(rejects), "rejects": rejects}
    embed_module.finish(out, [embed_module.part_name(n) for n in numbers], final)
