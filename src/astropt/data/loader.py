"""Loading prepared shards for training: datasets, collation, DDP sharding, resumable order.

- :class:`ShardDataset` (map-style) over a :class:`~astropt.data.shards.ShardSet`, split into
  train/val by a stable hash of each object's id (a given object is always on the same side,
  whatever the shard layout or the number of objects).
- :class:`ResumableDistributedSampler` gives each rank a disjoint slice of one permutation
  per ``(seed, epoch)``; its position is a state dict, so a resumed run sees exactly the
  remaining order.
- :func:`rows_to_records` and :class:`Collator`: the one path from stored rows to the
  model's batch dict (rows -> Observation records -> each modality's tokens, vectorised
  over the batch -> batch dict), used by training, every task and the benchmarks.
- :class:`ResumableLoader` runs a torch ``DataLoader`` (any number of workers) over those,
  epoch after epoch, and counts what the *trainer* consumed (not what workers prefetched).
- :class:`ShardStream` (iterable) reads whole shard files, each rank and worker its own,
  for data larger than memory.

Augmentation (flips and 90-degree rotations; never colour changes) draws its transform from
``(seed, epoch, index)`` alone, so it is reproduced exactly on resume and in any worker.
The sampler therefore yields ``(epoch, index)`` keys, which the dataset accepts as well as
plain integers.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from torch.utils.data import DataLoader, IterableDataset, Sampler, get_worker_info

from astropt.config import TEXT, ModalityConfig, ModelConfig
from astropt.data.shards import Manifest, ShardSet, fixed_column
from astropt.errors import DataError
from astropt.modalities.base import Tokens, build_modality
from astropt.modalities.text import TextRenderer

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "all")


# ----------------------------------------------------------------------------- helpers


def id_fraction(ids: list[str]) -> np.ndarray:
    """A stable number in [0, 1) per id (first 8 bytes of blake2b), for train/val splits."""
    out = np.empty(len(ids), dtype=np.float64)
    for i, name in enumerate(ids):
        digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "little") / 2.0**64
    return out


def split_indices(ids: list[str], split: str, val_fraction: float) -> np.ndarray:
    """Indices of the objects of ``split`` (``train``/``val``/``all``) by id hash."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if split == "all":
        return np.arange(len(ids), dtype=np.int64)
    is_val = id_fraction(ids) < val_fraction
    return np.nonzero(is_val if split == "val" else ~is_val)[0].astype(np.int64)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixed integer hash, vectorised."""
    x = x.astype(np.uint64)
    with np.errstate(over="ignore"):
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return x ^ (x >> np.uint64(31))


def dihedral_codes(seed: int, epochs: Any, indices: np.ndarray) -> np.ndarray:
    """Which of the 8 flips/rotations each sample gets, from ``(seed, epoch, index)`` only."""
    epochs = np.broadcast_to(np.asarray(epochs, dtype=np.uint64), np.shape(indices))
    with np.errstate(over="ignore"):
        key = _mix64(np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15) + epochs)
        return (_mix64(key ^ indices.astype(np.uint64)) % np.uint64(8)).astype(np.int64)


def apply_dihedral(images: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Rotate ``(B, C, H, W)`` images by ``code % 4`` quarter turns, flipping if ``code >= 4``.

    Vectorised per transform (at most 8 groups). Needs square images when rotating.
    """
    out = images.copy()
    for code in np.unique(codes):
        sel = codes == code
        x = np.rot90(images[sel], k=int(code) % 4, axes=(-2, -1))
        if code >= 4:
            x = x[..., ::-1]
        out[sel] = x
    return out


# ----------------------------------------------------------------------------- map-style


class ShardDataset(torch.utils.data.Dataset):
    """Map-style dataset over a prepared shard folder, one split of it.

    Args:
        source: a prepared folder or an open :class:`ShardSet`.
        model_config: the model; tells which record fields are images (for augmentation).
        split: ``train``, ``val`` or ``all``; by a stable hash of each id.
        val_fraction: fraction of ids in ``val``.
        seed: seed of the augmentation draws.
        augment: random flips / quarter turns of square images.

    Items are Observation records; a key is an index or an ``(epoch, index)`` pair (the
    epoch only seeds augmentation).
    """

    def __init__(
        self,
        source: str | os.PathLike | ShardSet,
        model_config: ModelConfig | None = None,
        split: str = "train",
        val_fraction: float = 0.1,
        seed: int = 0,
        augment: bool = False,
    ):
        self.shards = source if isinstance(source, ShardSet) else ShardSet(source)
        self.split = split
        self.indices = split_indices(self.shards.ids, split, val_fraction)
        if len(self.indices) == 0:
            raise DataError(
                f"{self.shards.directory}: split {split!r} is empty "
                f"({len(self.shards)} objects, val_fraction={val_fraction})"
            )
        self.seed = seed
        self.augment = augment
        image_fields = [m.field for m in (model_config.modalities if model_config else []) if m.kind == "image"]
        self.image_fields = [f for f in image_fields if f in self.shards.arrays]

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def ids(self) -> list[str]:
        all_ids = self.shards.ids
        return [all_ids[i] for i in self.indices]

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])[0]

    def __getitems__(self, keys: list[Any]) -> list[dict[str, Any]]:
        """Records of many keys at once (one vectorised read per shard)."""
        pairs = [k if isinstance(k, (tuple, list)) else (0, k) for k in keys]
        epochs = np.array([int(e) for e, _ in pairs], dtype=np.int64)
        local = np.array([int(i) for _, i in pairs], dtype=np.int64)
        if local.size and (local.min() < 0 or local.max() >= len(self)):
            raise IndexError(f"index out of range for the {len(self)} objects of split {self.split!r}")
        rows = self.shards.get_batch(self.indices[local])
        if self.augment:
            codes = dihedral_codes(self.seed, epochs, local)
            for name in self.image_fields:
                rows[name] = apply_dihedral(rows[name], codes)
        return rows_to_records(rows, self.shards.label_names)


def rows_to_records(rows: dict[str, Any], label_names: list[str]) -> list[dict[str, Any]]:
    """``ShardSet.get_batch`` rows -> Observation records, one per object.

    A record holds ``id``, every array column of ``rows`` (e.g. ``image``, ``spectrum`` and
    its ``spectrum_wavelength``) and ``labels``: ``{name: python scalar}`` of ``label_names``.
    """
    arrays = [k for k in rows if k != "id" and k not in label_names]
    labels = [n for n in label_names if n in rows]
    return [
        {"id": object_id, **{k: rows[k][j] for k in arrays},
         "labels": {n: _scalar(rows[n][j]) for n in labels}}
        for j, object_id in enumerate(rows["id"])
    ]


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


# ----------------------------------------------------------------------------- sampler


class ResumableDistributedSampler(Sampler):
    """Deterministic per-epoch order, split across ranks, resumable mid-epoch.

    Each epoch draws one permutation of ``n`` from ``(seed, epoch)``; its first
    ``(n // world_size) * world_size`` entries are dealt round-robin to the ranks, so every
    rank gets the same number of objects (keeping ranks in step) and no object is seen by two
    ranks. The remainder (fewer than ``world_size`` objects) is dropped for that epoch; since
    the permutation changes every epoch, different objects are dropped each time.

    Dealing round-robin also means that ``W`` ranks with micro-batch ``b`` see, step by step,
    the same objects as one rank with micro-batch ``W * b``.

    Yields ``(epoch, index)`` pairs (the epoch seeds augmentation; see module docstring).
    ``state_dict()`` is ``{"epoch", "position"}``: the next iteration starts there.
    """

    def __init__(self, n: int, world_size: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True):
        if n <= 0:
            raise ValueError("ResumableDistributedSampler needs at least one object")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} out of range for world size {world_size}")
        if n < world_size:
            raise ValueError(f"{n} objects cannot be shared among {world_size} ranks")
        self.n, self.world_size, self.rank = n, world_size, rank
        self.seed, self.shuffle = seed, shuffle
        self.epoch = 0
        self.position = 0

    def __len__(self) -> int:
        """Objects this rank sees per epoch."""
        return self.n // self.world_size

    def indices(self, epoch: int) -> np.ndarray:
        """This rank's indices for ``epoch``, in order."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            perm = torch.randperm(self.n, generator=g).numpy()
        else:
            perm = np.arange(self.n)
        total = len(self) * self.world_size
        return perm[self.rank : total : self.world_size]

    def set_epoch(self, epoch: int, position: int = 0) -> None:
        self.epoch, self.position = int(epoch), int(position)

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        position = int(state["position"])
        if not 0 <= position <= len(self):
            raise ValueError(f"sampler position {position} out of range for {len(self)} objects per epoch")
        self.set_epoch(int(state["epoch"]), position)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch = self.epoch
        for index in self.indices(epoch)[self.position :]:
            yield (epoch, int(index))


# ----------------------------------------------------------------------------- collation


class Collator:
    """Records -> ``(batch dict, ids)``: each modality tokenised vectorised over the batch.

    Args:
        modalities: the model config (all its modalities) or the modality configs to use.

    A modality is included when its record field is present in the batch's records; its
    tokens go to ``batch[name]``, positions to ``batch[f"{name}_positions"]``, for ragged
    modalities the validity mask to ``batch[f"{name}_mask"]``, and loss weights the modality
    provides (``stats["weights"]``) to ``batch[f"{name}_weights"]`` (see :func:`batch_of`).
    Given a model config with ``text``, each record's text (caption / catalogue line) goes to
    ``batch["text"]`` as a list of strings, which the LLM backbone tokenises with its own
    tokenizer (the data stage never sees the tokenizer).
    """

    def __init__(self, modalities: ModelConfig | list[ModalityConfig]):
        self.configs = list(modalities.modalities if isinstance(modalities, ModelConfig) else modalities)
        text = modalities.text if isinstance(modalities, ModelConfig) else None
        self.text = TextRenderer(text) if text is not None and text.enabled else None
        self._modalities: dict[str, Any] | None = None  # built lazily (in each worker)

    def _tokenisers(self) -> dict[str, Any]:
        if self._modalities is None:
            self._modalities = {m.name: build_modality(m) for m in self.configs}
        return self._modalities

    def __getstate__(self) -> dict[str, Any]:
        return {"configs": self.configs, "text": self.text, "_modalities": None}

    def tokenize(self, records: list[dict[str, Any]]) -> dict[str, Tokens]:
        """The Tokens of each modality present in ``records`` (with their statistics)."""
        if not records:
            raise DataError("cannot collate an empty batch")
        tokens = {
            m.name: self._tokenisers()[m.name].tokenize_records(records)
            for m in self.configs
            if any(m.field in r for r in records)
        }
        if not tokens:
            fields = [m.field for m in self.configs]
            raise DataError(
                f"objects {[r.get('id') for r in records[:3]]}: none of the model's fields {fields} "
                f"is present (records have {sorted(records[0])})"
            )
        return tokens

    def __call__(self, records: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
        batch: dict[str, Any] = batch_of(self.tokenize(records))
        if self.text is not None:
            batch[TEXT] = self.text.render_records(records)
        return batch, [str(r["id"]) for r in records]


def batch_of(tokens: dict[str, Tokens]) -> dict[str, torch.Tensor]:
    """The model's batch dict of each modality's Tokens (see :class:`Collator`)."""
    batch: dict[str, torch.Tensor] = {}
    for name, tok in tokens.items():
        batch[name] = tok.values
        batch[f"{name}_positions"] = tok.positions
        if tok.mask is not None:
            batch[f"{name}_mask"] = tok.mask
        if "weights" in tok.stats:  # per-sample loss weights (e.g. spectra's ivar)
            batch[f"{name}_weights"] = tok.stats["weights"]
    return batch


def to_device(batch: dict[str, Any], device: str | torch.device) -> dict[str, Any]:
    """A batch dict with every tensor on ``device`` (text, a list of strings, as it is)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ----------------------------------------------------------------------------- loader


class _Batches(Sampler):
    """Groups the sampler's keys into lists of ``batch_size`` (last partial batch dropped)."""

    def __init__(self, sampler: ResumableDistributedSampler, batch_size: int):
        self.sampler, self.batch_size = sampler, batch_size

    def __len__(self) -> int:
        return (len(self.sampler) - self.sampler.position) // self.batch_size

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        keys = list(self.sampler)
        for i in range(len(self)):
            yield keys[i * self.batch_size : (i + 1) * self.batch_size]


class ResumableLoader:
    """Endless, resumable stream of collated micro-batches for one rank.

    Iterating yields ``(batch, ids)`` forever, epoch after epoch (partial last batches are
    dropped so that every step has the same size on every rank). ``state_dict()`` gives the
    position *consumed by the caller*, so batches prefetched by workers are not lost or
    repeated on resume.
    """

    def __init__(
        self,
        dataset: ShardDataset,
        collate: Collator,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        self.sampler = ResumableDistributedSampler(len(dataset), world_size, rank, seed, shuffle)
        if len(self.sampler) < batch_size:
            raise DataError(
                f"{len(dataset)} objects in split {dataset.split!r} give {len(self.sampler)} per rank, "
                f"fewer than one micro-batch of {batch_size}"
            )
        self.dataset, self.collate, self.batch_size = dataset, collate, batch_size
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.epoch, self.position = 0, 0

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.load_state_dict(state)
        self.epoch, self.position = self.sampler.epoch, self.sampler.position

    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.batch_size

    def __iter__(self) -> Iterator[tuple[dict[str, torch.Tensor], list[str]]]:
        while True:
            self.sampler.set_epoch(self.epoch, self.position)
            loader = DataLoader(
                self.dataset,
                batch_sampler=_Batches(self.sampler, self.batch_size),
                collate_fn=self.collate,
                num_workers=self.num_workers,
                pin_memory=self.pin_memory,
            )
            for batch, ids in loader:
                self.position += len(ids)
                yield batch, ids
            self.epoch, self.position = self.epoch + 1, 0


# ----------------------------------------------------------------------------- streaming


class ShardStream(IterableDataset):
    """Iterable over the shard files of a prepared folder, for data larger than memory.

    Shard files are dealt to the ``world_size * num_workers`` readers round-robin (after a
    per-epoch shuffle of the file order), so every reader reads whole, disjoint files and
    only one file is mapped at a time. Rows within a file are shuffled from
    ``(seed, epoch, file)``. Yields Observation records of the chosen split.

    Ranks may get different numbers of objects when the files are uneven; the training
    loop uses the map-style :class:`ShardDataset` where ranks must stay in step.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        split: str = "all",
        val_fraction: float = 0.1,
        world_size: int = 1,
        rank: int = 0,
        seed: int = 0,
        shuffle: bool = True,
    ):
        self.directory = Path(directory)
        self.manifest = Manifest.read(self.directory)
        if len(self.manifest.shards) < world_size:
            log.warning(
                "%s: %d shard files for %d ranks; some ranks will read nothing",
                self.directory, len(self.manifest.shards), world_size,
            )
        self.split, self.val_fraction = split, val_fraction
        self.world_size, self.rank, self.seed, self.shuffle = world_size, rank, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def files(self) -> list[Path]:
        """The shard files this rank/worker reads this epoch, in order."""
        info = get_worker_info()
        n_workers, worker = (info.num_workers, info.id) if info else (1, 0)
        readers, reader = self.world_size * n_workers, self.rank * n_workers + worker
        order = np.arange(len(self.manifest.shards))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return [self.directory / self.manifest.shards[i]["file"] for i in order[reader::readers]]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        labels = list(self.manifest.labels)
        for path in self.files():
            try:
                with pa.memory_map(str(path)) as source:
                    table = pa.ipc.open_file(source).read_all()
            except (pa.ArrowInvalid, OSError) as exc:
                raise DataError(f"{path}: unreadable shard ({exc})") from exc
            ids = table.column("id").to_pylist()
            rows = split_indices(ids, self.split, self.val_fraction)
            if self.shuffle:
                rows = np.random.default_rng([self.seed, self.epoch, zlib.crc32(path.name.encode())]).permutation(rows)
            arrays = {}
            for name, spec in self.manifest.arrays.items():
                arrays[name] = (
                    table.column(name).to_pylist() if spec.variable else fixed_column(table, name, spec)
                )
            label_cols = {n: table.column(n).to_numpy(zero_copy_only=False) for n in labels}
            for r in rows:
                rec: dict[str, Any] = {"id": ids[r]}
                for name, values in arrays.items():
                    v = values[r]
                    rec[name] = np.asarray(v, dtype=np.float32) if isinstance(v, list) else v
                rec["labels"] = {n: _scalar(col[r]) for n, col in label_cols.items()}
                yield rec
