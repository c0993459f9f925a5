"""Generic typed config I/O: YAML/TOML files, ``a.b=value`` overrides, dataclass conversion.

Knows nothing of AstroPT's schema (that is :mod:`astropt.config`): it turns plain data into
any config dataclass, checking each value against the field's annotation and rejecting
unknown keys, with errors that name the dotted key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from astropt.atomic import atomic_write_text
from astropt.errors import ConfigError

T = TypeVar("T")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; errors name ``key``."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return _from_dict(tp, value, key)
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {list(choices)}")
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{key}.{i}") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponents without a dot (``3e-4``) as strings.
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported config type {_type_name(tp)}")


def _from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(
                f"unknown config key {where!r}; valid keys here: {sorted(names)}"
            )
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        kwargs[key] = _convert(value, hints[key], where)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{prefix}: {exc}" if prefix and not str(exc).startswith(prefix) else str(exc)) from None


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build a config dataclass from plain data, rejecting unknown keys and wrong types."""
    return _from_dict(cls, data, "")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config dataclass (JSON/YAML serialisable)."""
    return dataclasses.asdict(cfg)


def config_hash(cfg: Any) -> str:
    """Short stable hash of a config, for manifests and caches."""
    blob = json.dumps(to_dict(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a YAML or TOML config file into plain data."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = yaml.safe_load(text) or {}
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ConfigError(f"config file {path} could not be parsed: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: top level must be a mapping")
    return data


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides to plain config data (in place; returned too)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        parts = dotted.strip().split(".")
        node: Any = data
        for depth, part in enumerate(parts):
            key = _override_key(node, part, ".".join(parts[: depth + 1]), item)
            if depth == len(parts) - 1:
                node[key] = value
            elif isinstance(node, list):
                node = node[key]
            else:
                node = node.setdefault(key, {})
    return data


def _override_key(node: Any, part: str, where: str, item: str) -> Any:
    """The key of ``node`` that ``part`` of an override addresses, or a ConfigError."""
    if isinstance(node, list):
        if not part.lstrip("-").isdigit():
            raise ConfigError(f"override {item!r}: {where} must be a list index (0..{len(node) - 1})")
        if not -len(node) <= int(part) < len(node):
            raise ConfigError(f"override {item!r}: {where} does not exist (the list has {len(node)} items)")
        return int(part)
    if not isinstance(node, dict):
        parent = where.rsplit(".", 1)[0]
        raise ConfigError(f"override {item!r}: {parent} is a value ({node!r}), it has no key {part!r}")
    return part


def save_config(cfg: Any, path: str | os.PathLike) -> None:
    """Write a resolved config as YAML (or JSON for ``.json``) atomically."""
    path = Path(path)
    data = to_dict(cfg)
    text = json.dumps(data, indent=2) if path.suffix == ".json" else yaml.safe_dump(data, sort_keys=False)
    atomic_write_text(path, text)
