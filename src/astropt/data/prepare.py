"""``prepare``: any source -> prepared shards (the one format downstream stages read).

The one shard writer: file/catalogue/hub sources (a :class:`SourceConfig`) and the
synthetic survey (a :class:`Source` object) alike.

Objects are assigned to shards by position: shard ``k`` holds objects
``[k * rows_per_shard, (k + 1) * rows_per_shard)`` minus rejected ones. Each shard is
written whole and atomically, by the main process or by a worker process, so

- a crash never leaves a partial shard, and a rerun (resume) keeps the finished shards and
  redoes the rest;
- with ``on_error="raise"`` the first bad object stops the run with a :class:`DataError`
  naming its id, file and reason; its shard is not written;
- with ``on_error="skip"`` bad objects are left out and listed with their reason in
  ``rejects.csv`` (per shard in ``rejects/`` while running, so they survive a resume).

The manifest (``manifest.json``) is written last; ``prepare.json`` records the config the
folder is being prepared from, so a resume with a different source is refused.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import multiprocessing
import shutil
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from astropt.atomic import atomic_write_text
from astropt.config import config_hash as _config_hash
from astropt.config import to_dict
from astropt.data.schema import (
    check_record,
    coerce_labels,
    infer_label_types,
    infer_specs,
    sample_records,
)
from astropt.data.shards import (
    MANIFEST,
    SHARD_DIR,
    ArraySpec,
    DataError,
    Manifest,
    finalize,
    shard_entry,
    write_shard,
)
from astropt.data.sources import ObjectError, Source, SourceConfig, open_source
from astropt.fingerprint import digest
from astropt.locks import writes_to

log = logging.getLogger(__name__)

STATE = "prepare.json"
REJECTS = "rejects.csv"
REJECT_DIR = "rejects"
LABEL_ISSUES = "label_issues.csv"
OnError = Literal["raise", "skip"]


# ----------------------------------------------------------------------------- one shard


def _reject_path(out: Path, index: int) -> Path:
    return out / REJECT_DIR / f"part-{index:05d}.json"


Schema = tuple[dict[str, ArraySpec], dict[str, str]]  # array specs, label types
Done = tuple[dict[str, Any] | None, list[dict[str, str]], list[dict[str, str]]]  # entry, rejects, label issues


def shard_fingerprint(source: Source, start: int, stop: int | None, schema: Schema) -> str:
    """What a finished shard was made from: its objects' inputs and the folder's schema."""
    specs, labels = schema
    return digest(source.fingerprint(start, stop), {k: v.shape for k, v in specs.items()}, labels)


def write_one_shard(
    source: Source,
    out: Path,
    index: int,
    start: int,
    stop: int | None,
    schema: Schema,
    on_error: OnError,
    results: Any = None,
) -> tuple[dict[str, Any] | None, list[dict[str, str]], list[dict[str, str]], int]:
    """Read objects ``start..stop`` and write them as shard ``index``.

    Returns ``(manifest entry or None if every object was rejected, reject rows, label
    issue rows, objects read)``. The rejects of the shard (with the fingerprint of its
    inputs) are written atomically before the shard, so a finished shard always has them.
    """
    records, rejects, issues, n_read = [], [], [], 0
    fingerprint = shard_fingerprint(source, start, stop, schema)
    for _, result in results if results is not None else source.results(start, stop):
        n_read += 1
        try:
            if isinstance(result, ObjectError):
                raise result
            check_record(result, schema[0], source.config.path)
            issues += coerce_labels(result, schema[1], source.config.path, on_error)
            records.append(result)
        except ObjectError as exc:
            if on_error == "raise":
                raise
            log.debug("rejected %s", exc)
            rejects.append({"id": exc.obj_id, "file": exc.file, "reason": exc.reason})
    info = {"read": n_read, "rejects": rejects, "label_issues": issues, "fingerprint": fingerprint, "on_error": on_error}
    atomic_write_text(_reject_path(out, index), json.dumps(info))
    entry = write_shard(out, index, records, schema[0]) if records else None
    return entry, rejects, issues, n_read


def finished_shard(out: Path, index: int, fingerprint: str | None = None, on_error: OnError = "skip") -> Done | None:
    """``(entry, rejects, label issues)`` of a shard a previous run finished from the same
    inputs (``fingerprint``), or None to (re)do it. A shard with rejects is redone when
    ``on_error`` is now ``raise``, so that the bad object is raised."""
    path = _reject_path(out, index)
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError:
        return None
    if fingerprint is not None and info.get("fingerprint") != fingerprint:
        return None
    if info["rejects"] and on_error == "raise":
        return None
    entry = shard_entry(out, index)
    if entry is None and len(info["rejects"]) != info["read"]:
        return None
    return entry, info["rejects"], info.get("label_issues", [])


def remove_shards_from(out: Path, first: int) -> None:
    """Delete shards (and their reject lists) of index ``first`` and above: left by an
    earlier run over a source that had more objects."""
    for folder, pattern in ((out / SHARD_DIR, "part-*.arrow"), (out / REJECT_DIR, "part-*.json")):
        for path in folder.glob(pattern) if folder.is_dir() else []:
            if path.stem[5:].isdigit() and int(path.stem[5:]) >= first:
                path.unlink(missing_ok=True)


_WORKER_SOURCE: Source | None = None


def _init_worker(spec: SourceConfig | Source) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = spec if isinstance(spec, Source) else open_source(spec)


def _worker_task(*args: Any) -> tuple[dict[str, Any] | None, list[dict[str, str]], list[dict[str, str]], int]:
    if _WORKER_SOURCE is None:
        raise RuntimeError("worker process was not initialised")
    return write_one_shard(_WORKER_SOURCE, *args)


# ----------------------------------------------------------------------------- the folder


def _check_folder(out: Path, state: dict[str, Any], overwrite: bool) -> None:
    """Refuse to mix two sources in one folder; clear our own files when overwriting."""
    ours = {STATE, MANIFEST, REJECTS, SHARD_DIR, REJECT_DIR, LABEL_ISSUES}
    if not out.exists():
        return
    previous = out / STATE
    if overwrite:
        for name in ours:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return
    if previous.is_file():
        old = json.loads(previous.read_text())
        if old.get("hash") != state["hash"]:
            raise DataError(
                f"{out} was prepared from a different source or config ({old.get('source', {}).get('path')!r}, "
                f"hash {old.get('hash')} != {state['hash']}); pass overwrite=True (--overwrite) or use another folder"
            )
        return
    foreign = [p.name for p in out.iterdir() if p.name not in ours]
    if foreign:
        raise DataError(f"{out} is not empty and not a prepared folder ({foreign[:3]}...); use another folder")


def _progress(total: int | None, enabled: bool) -> tqdm:
    return tqdm(total=total, unit="obj", desc="prepare", disable=not enabled, dynamic_ncols=True)


def _run_random_access(
    source: Source, out: Path, rows: int, schema: Schema, workers: int, on_error: OnError, bar: tqdm,
    spec: SourceConfig | Source,
) -> dict[int, Done]:
    n = len(source)
    done: dict[int, Done] = {}
    todo = []
    n_shards = (n + rows - 1) // rows
    remove_shards_from(out, n_shards)
    for k in range(n_shards):
        fingerprint = shard_fingerprint(source, k * rows, min((k + 1) * rows, n), schema)
        finished = finished_shard(out, k, fingerprint, on_error)
        if finished is None:
            todo.append(k)
        else:
            done[k] = finished
            bar.update(min(rows, n - k * rows))
    if todo and len(done):
        log.info("resuming: %d shards already written, %d to do", len(done), len(todo))
    tasks = [(out, k, k * rows, min((k + 1) * rows, n), schema, on_error) for k in todo]
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            entry, rejects, issues, n_read = write_one_shard(source, *task)
            done[task[1]] = (entry, rejects, issues)
            bar.update(n_read)
        return done
    # spawn: the parent may hold threads (torch, HF) that fork would copy in a bad state.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(spec,)) as pool:
        futures = {pool.submit(_worker_task, *task): task[1] for task in tasks}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in finished:
                if future.exception() is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise future.exception()
                entry, rejects, issues, n_read = future.result()
                done[futures[future]] = (entry, rejects, issues)
                bar.update(n_read)
    return done


def _run_stream(
    source: Source, out: Path, rows: int, schema: Schema, on_error: OnError, bar: tqdm
) -> dict[int, Done]:
    """Streamed sources: read in order, one shard at a time; finished shards are skipped."""
    done = {}
    k = 0
    while (finished := finished_shard(out, k, shard_fingerprint(source, 0, 0, schema), on_error)) is not None:
        done[k] = finished
        k += 1
    stream = source.results(start=k * rows)
    while True:
        chunk = [item for _, item in zip(range(rows), stream, strict=False)]
        if not chunk:
            remove_shards_from(out, k)
            return done
        entry, rejects, issues, n_read = write_one_shard(source, out, k, 0, 0, schema, on_error, results=chunk)
        done[k] = (entry, rejects, issues)
        bar.update(n_read)
        k += 1


@writes_to("out")
def prepare(
    source_cfg: SourceConfig | Source,
    out: str | Path,
    rows_per_shard: int = 512,
    workers: int = 1,
    on_error: OnError = "raise",
    progress: bool = True,
    overwrite: bool = False,
    arrays: dict[str, ArraySpec] | None = None,
    config_hash: str | None = None,
) -> Manifest:
    """Convert a source into a prepared shard folder (see module docstring).

    Args:
        source_cfg: what to read and how to preprocess it, or a source object (e.g. the
            synthetic survey's; picklable, for ``workers > 1``).
        out: the prepared folder (created; resumed if it holds a run of the same config).
        rows_per_shard: objects per shard file.
        workers: processes writing shards in parallel (1: in this process).
        on_error: ``raise`` at the first bad object, or ``skip`` it and list it in rejects.csv.
        progress: show a progress bar.
        overwrite: discard a previous preparation in ``out`` (of any config).
        arrays: the array fields and shapes every object must have (default: from the
            configuration, else the majority of a spread sample).
        config_hash: the folder's fingerprint, stored in the manifest (default: of the
            source config and ``rows_per_shard``).
    """
    if rows_per_shard <= 0:
        raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}")
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    out = Path(out)
    source = source_cfg if isinstance(source_cfg, Source) else open_source(source_cfg)
    folder_hash = config_hash or _config_hash(source.config)[:12] + f"-{rows_per_shard}"
    state = {"hash": folder_hash, "source": to_dict(source.config)}
    _check_folder(out, state, overwrite)
    atomic_write_text(out / STATE, json.dumps(state, indent=2))
    sample = sample_records(source, on_error)
    specs, labels = arrays or infer_specs(source, sample), infer_label_types(source, sample)
    total = len(source) if source.random_access else None
    with _progress(total, progress) as bar:
        if source.random_access:
            done = _run_random_access(source, out, rows_per_shard, (specs, labels), workers, on_error, bar,
                                      source_cfg)
        else:
            done = _run_stream(source, out, rows_per_shard, (specs, labels), on_error, bar)
    entries = [done[k][0] for k in sorted(done) if done[k][0] is not None]
    rejects = [row for k in sorted(done) for row in done[k][1]]
    _write_csv(out / REJECTS, rejects, ["id", "file", "reason"])
    _report_label_issues(out, [row for k in sorted(done) for row in done[k][2]])
    if not entries:
        raise DataError(f"{source.config.path}: every object was rejected; see {out / REJECTS}")
    description = {**source.describe(), "config": state["source"], "rows_per_shard": rows_per_shard}
    manifest = finalize(out, entries, specs, labels, description, state["hash"], len(rejects))
    if rejects:
        log.warning("%d objects rejected (listed with their reasons in %s)", len(rejects), out / REJECTS)
    log.info("prepared %d objects in %d shards at %s", manifest.n_objects, len(entries), out)
    return manifest


def _write_csv(path: Path, rows: list[dict[str, str]], fields: list[str]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def _report_label_issues(out: Path, issues: list[dict[str, str]]) -> None:
    """Label cells stored as missing: listed in label_issues.csv (removed when there are none)."""
    path = out / LABEL_ISSUES
    if not issues:
        path.unlink(missing_ok=True)
        return
    _write_csv(path, issues, ["id", "label", "value", "reason"])
    examples = ", ".join(f"{r['id']}.{r['label']}={r['value']!r}" for r in issues[:3])
    log.warning("%d label cells did not fit their type and are stored as missing (%s...; all in %s)",
                len(issues), examples, path)


# ----------------------------------------------------------------------------- info


def info(directory: str | Path) -> dict[str, Any]:
    """Summary of a prepared folder: the manifest plus label ranges, rejects and disk size."""
    from astropt.data.shards import ShardSet

    shards = ShardSet(directory)
    manifest = shards.manifest
    labels: dict[str, dict[str, Any]] = {}
    for name, values in shards.labels().items():
        if manifest.labels[name] == "string":
            labels[name] = {"type": "string", "distinct": len(set(values.tolist()))}
        else:
            finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
            stats = [float(np.min(finite)), float(np.median(finite)), float(np.max(finite))] if finite.size else []
            labels[name] = {"type": manifest.labels[name], "min_median_max": stats, "missing": int(values.size - finite.size)}
    size = sum(p.stat().st_size for p in Path(directory).rglob("*") if p.is_file())
    return {
        "directory": str(directory),
        "objects": manifest.n_objects,
        "shards": len(manifest.shards),
        "rejects": manifest.rejects,
        "arrays": {k: {"shape": v.shape, "dtype": v.dtype} for k, v in manifest.arrays.items()},
        "labels": labels,
        "band_stats": manifest.band_stats,
        "source": manifest.source,
        "disk_bytes": size,
    }


def format_info(summary: dict[str, Any]) -> str:
    """The summary of :func:`info` as a plain-text table."""
    lines = [
        f"{summary['directory']}: {summary['objects']} objects in {summary['shards']} shards, "
        f"{summary['rejects']} rejected, {summary['disk_bytes'] / 2**20:.1f} MiB",
        f"source: {summary['source'].get('kind', '?')} {summary['source'].get('path', '')}",
        "",
        f"{'array':<24} {'shape':<20} dtype",
    ]
    for name, spec in summary["arrays"].items():
        shape = "variable (1-D)" if spec["shape"] == [-1] else "x".join(map(str, spec["shape"]))
        lines.append(f"{name:<24} {shape:<20} {spec['dtype']}")
    if summary["labels"]:
        lines += ["", f"{'label':<24} {'type':<8} {'min':>12} {'median':>12} {'max':>12}"]
        for name, stats in summary["labels"].items():
            if stats["type"] == "string":
                lines.append(f"{name:<24} {'string':<8} {stats['distinct']:>12} distinct values")
            else:
                values = stats["min_median_max"] or [float("nan")] * 3
                lines.append(f"{name:<24} {stats['type']:<8} " + " ".join(f"{v:>12.5g}" for v in values))
    band_names = summary["source"].get("config", {}).get("bands") or []
    for name, stats in summary["band_stats"].items():
        lines += ["", f"{name + ' band':<24} {'mean':>12} {'std':>12} {'sky noise':>12}"]
        names = band_names if len(band_names) == len(stats["mean"]) else range(len(stats["mean"]))
        noise = stats.get("noise") or [float("nan")] * len(stats["mean"])
        for band, mean, std, sigma in zip(names, stats["mean"], stats["std"], noise, strict=True):
            lines.append(f"  {band!s:<22} {mean:>12.5g} {std:>12.5g} {sigma:>12.5g}")
    return "\n".join(lines)
