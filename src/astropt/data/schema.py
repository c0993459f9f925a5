"""The schema of a prepared folder: which arrays (and shapes) and labels (and types) every
object must have.

It never comes from whichever object is read first. Array shapes come from the
configuration where it fixes them (``image_size`` and ``n_bands`` for the image field),
otherwise from the most common shape among a sample of objects spread over the source; a
tie is an error asking for the shape. Label types come from ``source.label_types`` where
declared, otherwise from the majority of the values (all of them for catalogues and file
lists, whose labels are known without reading a file). Objects that do not fit are
rejected; label cells that do not fit their type are stored as missing and reported.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from astropt.data.shards import ArraySpec, DataError
from astropt.data.sources import ObjectError, Source

SAMPLE = 64  # objects read to find the majority shapes


def array_specs(record: dict[str, Any]) -> dict[str, ArraySpec]:
    """Array fields of a record: 1-D arrays are variable length, others fixed shape."""
    specs = {}
    for name, value in record.items():
        if isinstance(value, np.ndarray):
            specs[name] = ArraySpec([-1]) if value.ndim == 1 else ArraySpec(list(value.shape))
    return specs


def sample_records(source: Source, on_error: str) -> list[dict[str, Any]]:
    """Up to ``SAMPLE`` readable records, spread evenly over a random-access source (the
    first ones of a stream). Unreadable ones are left for the writer to report in order,
    unless none is readable."""
    if source.random_access:
        n = len(source)
        picks = np.unique(np.linspace(0, n - 1, min(n, SAMPLE)).round().astype(int)) if n else []
        results = []
        for i in picks:
            try:
                results.append(source.read(int(i)))
            except ObjectError as exc:
                results.append(exc)
    else:
        results = [r for _, r in zip(range(SAMPLE), source.results(), strict=False)]
        results = [r for _, r in results]
    records = [r for r in results if not isinstance(r, ObjectError)]
    if not records:
        errors = [r for r in results if isinstance(r, ObjectError)]
        if errors and on_error == "raise":
            raise errors[0]
        raise DataError(f"{source.config.path}: no readable object among the {len(results)} sampled")
    return records


def _fixed_image_shape(source: Source) -> tuple[int | None, int | None]:
    cfg = source.config
    return (cfg.n_bands or None), (cfg.image_size or None)


def _fits_config(shape: tuple[int, ...], bands: int | None, size: int | None) -> bool:
    if len(shape) != 3:
        return False
    return (bands is None or shape[0] == bands) and (size is None or shape[1:] == (size, size))


def infer_specs(source: Source, records: list[dict[str, Any]]) -> dict[str, ArraySpec]:
    """Array fields every object must have, with their shapes (see module docstring)."""
    counts: dict[str, Counter] = {}
    for record in records:
        for name, spec in array_specs(record).items():
            counts.setdefault(name, Counter())[tuple(spec.shape)] += 1
    bands, size = _fixed_image_shape(source)
    image_field = source.config.field
    specs = {}
    for name, shapes in counts.items():
        explicit = name == image_field and (bands or size)
        if explicit:
            shapes = Counter({s: c for s, c in shapes.items() if _fits_config(s, bands, size)})
            if bands and size:
                shapes = Counter({(bands, size, size): max(1, sum(shapes.values()))})
        elif 2 * sum(shapes.values()) <= len(records):
            continue  # an array only a minority of objects has is not part of the schema
        ranked = shapes.most_common()
        if not ranked:
            raise DataError(f"{source.config.path}: no sampled object has a {name!r} of {bands} bands and size {size}")
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            tied = ", ".join(f"{c} with shape {list(s) if s != (-1,) else '1-D'}" for s, c in ranked[:3])
            raise DataError(
                f"{source.config.path}: cannot tell which shape {name!r} must have ({tied}); "
                "pass --n-bands and --image-size (source.n_bands, source.image_size) to fix it"
            )
        specs[name] = ArraySpec(list(ranked[0][0]))
    return specs


def check_record(record: dict[str, Any], specs: dict[str, ArraySpec], where: str) -> None:
    """Raise :class:`ObjectError` when a record's arrays do not match the folder's specs."""
    for name, spec in specs.items():
        value = record.get(name)
        if value is None:
            raise ObjectError(record["id"], where, f"has no {name!r} array")
        shape = list(np.shape(value))
        if spec.variable and len(shape) != 1:
            raise ObjectError(record["id"], where, f"{name!r} must be 1-D, got shape {shape}")
        if not spec.variable and shape != spec.shape:
            raise ObjectError(record["id"], where, f"{name!r} has shape {shape}, expected {spec.shape}")


# ----------------------------------------------------------------------------- labels


def value_type(value: Any) -> str | None:
    """``int64``/``float64``/``string`` of one label cell (numbers written as text count as
    numbers); None for a missing cell."""
    if value is None:
        return None
    if isinstance(value, (bool, int, np.integer)):
        return "int64"
    if isinstance(value, (float, np.floating)):
        return "float64"
    text = str(value).strip()
    for kind, parse in (("int64", int), ("float64", float)):
        try:
            parse(text)
            return kind
        except ValueError:
            continue
    return "string"


def infer_label_types(source: Source, records: list[dict[str, Any]]) -> dict[str, str]:
    """Label name -> type: declared in ``source.label_types``, else the majority's."""
    entries = getattr(source, "entries", None)
    rows = [labels for _, _, labels in entries] if entries is not None else [r.get("labels", {}) for r in records]
    names = sorted({k for row in rows for k in row})
    types = {}
    for name in names:
        if name in source.config.label_types:
            types[name] = source.config.label_types[name]
            continue
        kinds = Counter(t for row in rows if (t := value_type(row.get(name))) is not None)
        numeric = kinds["int64"] + kinds["float64"]
        if numeric > kinds["string"]:
            types[name] = "float64" if kinds["float64"] else "int64"
        else:
            types[name] = "string"
    return types


def _coerce(value: Any, kind: str) -> Any:
    """``value`` as a Python value of ``kind``; ValueError when it does not fit."""
    if value is None:
        return None
    if kind == "string":
        return str(value)
    if kind == "float64":
        return float(value.strip() if isinstance(value, str) else value)
    number = float(value.strip() if isinstance(value, str) else value)
    if not number.is_integer():
        raise ValueError(f"{value!r} is not an integer")
    return int(number)


def coerce_labels(record: dict[str, Any], types: dict[str, str], where: str, on_error: str) -> list[dict[str, str]]:
    """Make the record's labels their folder types in place; cells that do not fit become
    missing (returned as issue rows) or, with ``on_error="raise"``, an :class:`ObjectError`."""
    issues = []
    labels = record.get("labels", {})
    for name, value in labels.items():
        kind = types.get(name)
        if kind is None:
            continue
        try:
            labels[name] = _coerce(value, kind)
        except (TypeError, ValueError):
            reason = f"label {name!r} = {value!r} is not a {kind} value"
            if on_error == "raise":
                raise ObjectError(record["id"], where, reason) from None
            labels[name] = None
            issues.append({"id": record["id"], "label": name, "value": str(value), "reason": reason + "; stored as missing"})
    return issues
