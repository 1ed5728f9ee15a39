from __future__ import annotations

import pytest

from medvlp.train.sampler import ShardedEpochSampler


def _batches(indices: list[int], size: int) -> list[list[int]]:
    return [indices[i:i + size] for i in range(0, len(indices) - size + 1, size)]


def test_two_ranks_cover_exactly_the_single_process_batches():
    n, b = 103, 4
    single = ShardedEpochSampler(n, seed=7)
    ranks = [ShardedEpochSampler(n, seed=7, rank=r, world_size=2) for r in range(2)]
    for epoch in (0, 3):
        single.set_epoch(epoch)
        for s in ranks:
            s.set_epoch(epoch)
        one = _batches(list(single), 2 * b)
        per_rank = [_batches(list(s), b) for s in ranks]
        assert len(per_rank[0]) == len(per_rank[1]) == len(one) == (n // 2) // b
        for step, batch in enumerate(one):
            assert sorted(per_rank[0][step] + per_rank[1][step]) == sorted(batch)


def test_order_depends_on_seed_and_epoch_only():
    a, b = ShardedEpochSampler(50, seed=1), ShardedEpochSampler(50, seed=1)
    a.set_epoch(2)
    b.set_epoch(2)
    assert list(a) == list(b)
    b.set_epoch(3)
    assert list(a) != list(b)
    assert sorted(a) == list(range(50))


def test_set_start_skips_batches_and_set_epoch_clears_it():
    s = ShardedEpochSampler(40, seed=0, rank=1, world_size=2)
    s.set_epoch(1)
    full = list(s)
    s.set_start(3, 4)
    assert list(s) == full[12:] and len(s) == len(full) - 12
    s.set_epoch(1)
    assert list(s) == full


def test_drop_last_truncates_and_padding_repeats_the_head():
    s = ShardedEpochSampler(11, seed=0, world_size=3, shuffle=False)
    assert s.epoch_indices() == list(range(9)) and s.shard_size() == 3
    p = ShardedEpochSampler(11, seed=0, world_size=3, shuffle=False, drop_last=False)
    assert p.epoch_indices() == list(range(11)) + [0] and p.shard_size() == 4


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="rank 2"):
        ShardedEpochSampler(10, seed=0, rank=2, world_size=2)
    with pytest.raises(ValueError, match="empty"):
        ShardedEpochSampler(0, seed=0)
