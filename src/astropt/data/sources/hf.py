"""Hugging Face ``datasets``: a local ``save_to_disk`` folder, Parquet file(s), or a hub id,
streamed from the hub, or offline (``HF_HUB_OFFLINE=1``) from the snapshot in the local
Hugging Face cache. This is how users reach the public galaxy datasets.

Columns map to record fields with ``source.columns`` (default: ``image`` -> ``image``); an
image column may hold PIL images (the ``Image`` feature) or nested arrays. The reference
fed these images as ``np.array(image).swapaxes(0, 2)``; ``source.hwc_to_chw="swapaxes"``
reproduces that for models trained that way.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from astropt.data.sources.base import Result, Source, SourceConfig, describe, limited
from astropt.data.sources.preprocess import finish_record
from astropt.data.sources.raster import pil_to_array
from astropt.errors import DataError, ObjectError

if TYPE_CHECKING:
    import datasets

log = logging.getLogger(__name__)

HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
HUB_TIMEOUT_S = 10.0


def is_hf_folder(path: Path) -> bool:
    """A ``save_to_disk`` folder (a Dataset or a DatasetDict)."""
    return (path / "dataset_info.json").is_file() or (path / "dataset_dict.json").is_file()


def _offline() -> bool:
    flags = (os.environ.get(k, "") for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _cached_snapshot(repo_id: str) -> Path:
    """The folder of the cached snapshot of hub dataset ``repo_id`` (offline: nothing is
    downloaded), or a DataError saying how to get it."""
    from huggingface_hub import errors as hf
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", local_files_only=True))
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled, FileNotFoundError):
        raise DataError(
            f"{repo_id}: not in the local Hugging Face cache and the hub is offline "
            f"(HF_HUB_OFFLINE/HF_DATASETS_OFFLINE); download it once with network access "
            f"(`hf download {repo_id} --repo-type dataset`) or pass a local folder"
        ) from None


def _check_hub(repo_id: str) -> None:
    """Fail fast (seconds, not a hang) when the hub cannot be reached or has no such dataset."""
    from huggingface_hub import HfApi

    try:
        HfApi().dataset_info(repo_id, timeout=HUB_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - network/HTTP errors of many types
        raise DataError(
            f"Hugging Face dataset {repo_id!r} is not reachable ({describe(exc)}); check the id "
            "and your network, or download it and pass the local folder"
        ) from exc


def _hub_stream(cfg: SourceConfig) -> datasets.IterableDataset:
    """Hub dataset ``cfg.path`` as a stream: from the hub, or offline from its cached
    snapshot (``datasets`` finds the split's files by their names, as on the hub)."""
    import datasets

    if not _offline():
        _check_hub(cfg.path)
        return datasets.load_dataset(cfg.path, split=cfg.split, streaming=True)
    folder = _cached_snapshot(cfg.path)
    log.info("%s: offline, streaming the cached snapshot %s", cfg.path, folder.name)
    return datasets.load_dataset(str(folder), split=cfg.split, streaming=True)


def load(cfg: SourceConfig) -> datasets.Dataset | datasets.IterableDataset:
    """The ``datasets`` object behind ``cfg.path`` (local folder, Parquet, or hub id)."""
    import datasets  # heavy; only sources of this kind pay for it

    path = Path(cfg.path).expanduser()
    try:
        if path.is_dir() and is_hf_folder(path):
            ds = datasets.load_from_disk(str(path))
        elif path.exists() and (path.suffix == ".parquet" or path.is_dir()):
            files = sorted(str(p) for p in path.glob("**/*.parquet")) if path.is_dir() else [str(path)]
            if not files:
                raise DataError(f"{path}: no Parquet files and not a save_to_disk folder")
            # streaming: read the files where they are (no Arrow cache copy on disk)
            ds = datasets.load_dataset("parquet", data_files=files, split="train", streaming=cfg.streaming)
        elif not path.exists() and HUB_ID.match(cfg.path):
            return _hub_stream(cfg)
        else:
            raise DataError(f"{cfg.path}: not a local dataset folder, Parquet file or hub id")
    except (DataError, ObjectError):
        raise
    except Exception as exc:  # noqa: BLE001 - datasets raises many types on bad folders
        raise DataError(f"{cfg.path}: cannot open as a Hugging Face dataset ({describe(exc)})") from exc
    if isinstance(ds, datasets.DatasetDict):
        if cfg.split not in ds:
            raise DataError(f"{cfg.path}: no split {cfg.split!r}; splits are {list(ds)}")
        ds = ds[cfg.split]
    return ds


def _to_array(value: Any) -> tuple[np.ndarray, str | None]:
    """A cell -> array, and ``hwc`` when it was a PIL image (whose layout is known)."""
    if hasattr(value, "mode") and hasattr(value, "size"):  # a PIL image
        return pil_to_array(value), "hwc"
    return np.asarray(value), None


class HFSource(Source):
    """Rows of a Hugging Face dataset (see module docstring)."""

    def __init__(self, config: SourceConfig):
        import datasets

        super().__init__(config)
        self.dataset = load(config)
        self.table: datasets.Dataset | None = None
        """A local dataset that is streamed: its rows, to cut into shards (``shards``)."""
        if config.streaming and isinstance(self.dataset, datasets.Dataset):
            self.table = self.dataset
            self.dataset = self.dataset.to_iterable_dataset()  # read in order, like a hub stream
        self.random_access = isinstance(self.dataset, datasets.Dataset)
        names = list(self.dataset.features or {}) if self.dataset.features else []
        self.columns = dict(config.columns) or {config.field: config.field}
        if names:
            missing = [c for c in self.columns if c not in names]
            if missing:
                raise DataError(f"{config.path}: no column {missing}; columns are {names}")
        self.id_name = config.id_column if config.id_column in names else None
        self.labels = self._resolve_labels(names)
        if self.random_access:
            image_columns = [c for c in self.columns if isinstance(self.dataset.features[c], datasets.Image)]
            others = [c for c in [*self.columns, *self.labels, self.id_name] if c and c not in image_columns]
            # numpy format for arrays (fast); PIL images stay PIL so their mode is handled.
            self._rows = self.dataset.with_format("numpy", columns=others, output_all_columns=True)

    def _resolve_labels(self, names: list[str]) -> list[str]:
        import datasets

        cfg = self.config
        if cfg.label_columns is not None:
            missing = [c for c in cfg.label_columns if names and c not in names]
            if missing:
                raise DataError(f"{cfg.path}: missing label column(s) {missing}; columns are {names}")
            return list(cfg.label_columns)
        features = self.dataset.features or {}
        skip = set(self.columns) | {cfg.id_column}
        return [c for c in names if c not in skip and isinstance(features[c], datasets.Value)]

    def __len__(self) -> int:
        if not self.random_access:
            raise TypeError(f"{self.config.path} is streamed: its length is unknown")
        return limited(len(self.dataset), self.config)

    def _record(self, index: int, row: dict[str, Any]) -> dict[str, Any]:
        obj_id = str(row[self.id_name]) if self.id_name else str(index)
        try:
            arrays, layout = {}, None
            for column, field in self.columns.items():
                arrays[field], known = _to_array(row[column])
                layout = known if field == self.config.field and known else layout
            labels = {k: row.get(k) for k in self.labels}
            return finish_record(obj_id, arrays, labels, self.config, layout)
        except Exception as exc:  # noqa: BLE001 - reader boundary: name the object
            raise ObjectError(obj_id, f"{self.config.path}[{index}]", describe(exc)) from exc

    def read(self, index: int) -> dict[str, Any]:
        return self._record(index, self._rows[index])

    def results(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, Result]]:
        if self.random_access:
            yield from super().results(start, stop)
            return
        limit = self.config.limit or None
        stop = limit if stop is None else (min(stop, limit) if limit else stop)
        stream = self.dataset.skip(start) if start else self.dataset
        for index, result in self.records(stream, start):
            if stop is not None and index >= stop:
                return
            yield index, result

    def records(self, rows: Iterable[dict[str, Any]], start: int = 0) -> Iterator[tuple[int, Result]]:
        """``(index, record or ObjectError)`` of raw dataset ``rows`` (e.g. one rank's split
        of the stream), numbered from ``start`` (the ids of a dataset without id column)."""
        for index, row in enumerate(rows, start):
            try:
                yield index, self._record(index, row)
            except ObjectError as exc:
                yield index, exc

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": "hf", "path": self.config.path, "columns": self.columns}
        out["split"] = self.config.split
        if self.random_access:
            out["objects"] = len(self)
        return out
