"""The shard loader: splits, DDP sharding, resumable order, collation, augmentation, streaming."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from astropt.config import ModalityConfig, ModelConfig
from astropt.data.loader import (
    Collator,
    ResumableDistributedSampler,
    ResumableLoader,
    ShardDataset,
    ShardStream,
    apply_dihedral,
    split_indices,
)
from astropt.data.shards import ArraySpec, DataError, ShardSet, finalize, write_shard
from astropt.modalities.image import ImageModality

N = 37  # odd on purpose: two ranks cannot split it evenly


def _config(channels: int = 2) -> ModelConfig:
    image = ModalityConfig(image_size=8, patch_size=4, n_channels=channels, patch_order="raster")
    return ModelConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, modalities=[image])


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("loader")
    rng = np.random.default_rng(1)
    records = [
        {"id": f"g{i:03d}", "image": rng.standard_normal((2, 8, 8)).astype(np.float32),
         "labels": {"z": float(i) / 10, "kind": i % 3}}
        for i in range(N)
    ]
    arrays = {"image": ArraySpec([2, 8, 8])}
    entries = [write_shard(directory, k, records[s : s + 10], arrays) for k, s in enumerate(range(0, N, 10))]
    finalize(directory, entries, arrays, {"z": "float64", "kind": "int64"})
    return directory


def test_split_is_stable_and_disjoint(shards):
    ids = ShardSet(shards).ids
    train, val = split_indices(ids, "train", 0.3), split_indices(ids, "val", 0.3)
    assert set(train).isdisjoint(val) and len(train) + len(val) == N
    # An object's side depends on its id only, not on which other objects are present.
    sub = [ids[i] for i in range(0, N, 2)]
    assert {sub[i] for i in split_indices(sub, "val", 0.3)} == {ids[i] for i in val if ids[i] in sub}
    with pytest.raises(ValueError, match="split"):
        split_indices(ids, "test", 0.3)


def test_ddp_sharding_covers_every_object_once_per_epoch():
    for epoch in range(3):
        seen = Counter()
        for rank in range(2):
            sampler = ResumableDistributedSampler(N, world_size=2, rank=rank, seed=7)
            sampler.set_epoch(epoch)
            keys = list(sampler)
            assert len(keys) == N // 2 and all(e == epoch for e, _ in keys)
            seen.update(i for _, i in keys)
        assert max(seen.values()) == 1  # no object on two ranks
        assert len(seen) == N - N % 2  # the (fewer than world_size) remainder is dropped
    orders = [list(ResumableDistributedSampler(N, 1, 0, seed=7).indices(e)) for e in range(2)]
    assert orders[0] != orders[1] and sorted(orders[0]) == list(range(N))


def test_two_ranks_see_what_one_rank_with_double_batch_sees(shards):
    dataset = ShardDataset(shards, _config(), split="all")
    single = iter(ResumableLoader(dataset, Collator(_config()), 8, 1, 0, seed=3))
    ranks = [iter(ResumableLoader(dataset, Collator(_config()), 4, 2, r, seed=3)) for r in range(2)]
    for _ in range(6):  # crosses an epoch boundary (18 objects per rank per epoch)
        _, ids = next(single)
        assert sorted(ids) == sorted(next(ranks[0])[1] + next(ranks[1])[1])


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_position_gives_the_same_remaining_order(shards, workers):
    dataset = ShardDataset(shards, _config(), split="all", augment=True)
    loader = ResumableLoader(dataset, Collator(_config()), 5, seed=11, num_workers=workers)
    stream = iter(loader)
    reference = [next(stream) for _ in range(12)]  # 7 batches per epoch: crosses epochs
    resumed_at = 9
    first = ResumableLoader(dataset, Collator(_config()), 5, seed=11, num_workers=workers)
    stream = iter(first)
    for _ in range(resumed_at):
        next(stream)
    state = first.state_dict()
    assert state == {"epoch": 1, "position": 10}
    second = ResumableLoader(dataset, Collator(_config()), 5, seed=11, num_workers=workers)
    second.load_state_dict(state)
    rest = [b for _, b in zip(range(12 - resumed_at), second, strict=False)]
    for (batch, ids), (ref_batch, ref_ids) in zip(rest, reference[resumed_at:], strict=True):
        assert ids == ref_ids
        assert torch.equal(batch["images"], ref_batch["images"])  # augmentation reproduced too


def test_round_trip_shards_to_loader(shards):
    source = ShardSet(shards)
    dataset = ShardDataset(shards, _config(), split="all")
    by_id = {source[i]["id"]: source[i] for i in range(len(source))}
    loader = ResumableLoader(dataset, Collator(_config()), 4, shuffle=False)
    modality = ImageModality(_config().modalities[0])
    seen = []
    for (batch, ids), _ in zip(loader, range(len(dataset) // 4), strict=False):
        images = np.stack([by_id[i]["image"] for i in ids])
        expected = modality.tokenize(torch.from_numpy(images))
        assert torch.equal(batch["images"], expected.values)
        assert torch.equal(batch["images_positions"], expected.positions)
        seen += ids
    assert len(seen) == len(set(seen)) == N - N % 4
    for i in range(N):
        record = dataset[i]
        original = by_id[record["id"]]
        np.testing.assert_array_equal(record["image"], original["image"])
        assert record["labels"] == original["labels"] and isinstance(record["labels"]["kind"], int)


def test_augmentation_is_a_dihedral_transform_keyed_by_epoch_and_index(shards):
    plain = ShardDataset(shards, _config(), split="all")
    augmented = ShardDataset(shards, _config(), split="all", augment=True, seed=5)
    images = np.stack([plain[i]["image"] for i in range(N)])
    dihedral = np.stack([apply_dihedral(images, np.full(N, code)) for code in range(8)])  # (8, N, ...)
    for epoch in (0, 1):
        out = np.stack([r["image"] for r in augmented.__getitems__([(epoch, i) for i in range(N)])])
        matches = [(dihedral[:, i] == out[i]).all(axis=(1, 2, 3)).any() for i in range(N)]
        assert all(matches)
        again = np.stack([augmented[(epoch, i)]["image"] for i in range(N)])
        np.testing.assert_array_equal(out, again)  # order/batching does not matter
    sums = images.sum(axis=(2, 3))
    np.testing.assert_allclose(out.sum(axis=(2, 3)), sums, rtol=1e-5)  # never a colour change


def test_collate_errors_name_the_objects(shards):
    collate = Collator(_config())
    with pytest.raises(DataError, match="g000"):
        collate([{"id": "g000", "spectrum": np.zeros(5)}])
    with pytest.raises(DataError, match="empty"):
        collate([])


def test_too_small_split_is_a_clear_error(shards):
    with pytest.raises(DataError, match="micro-batch"):
        ResumableLoader(ShardDataset(shards, _config(), split="all"), Collator(_config()), 64)


def test_streaming_reads_disjoint_files_per_rank(shards):
    per_rank = [[r["id"] for r in ShardStream(shards, world_size=2, rank=k, seed=2)] for k in range(2)]
    assert set(per_rank[0]).isdisjoint(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(ShardSet(shards).ids)
    loader = torch.utils.data.DataLoader(ShardStream(shards, seed=2), batch_size=None, num_workers=2)
    ids = [r["id"] for r in loader]
    assert sorted(ids) == sorted(ShardSet(shards).ids)
    val = [r["id"] for r in ShardStream(shards, split="val", val_fraction=0.3)]
    assert set(val) == {ShardSet(shards).ids[i] for i in split_indices(ShardSet(shards).ids, "val", 0.3)}
