"""A sampler whose order depends only on (seed, epoch), shards over ranks and can start mid-epoch.

Order of one epoch::

    perm = randperm(num_samples, generator=Generator().manual_seed(seed + epoch))  # or arange
    perm = perm[: num_samples - num_samples % world_size]                       # drop_last
    rank r iterates perm[r::world_size]

Why this matters: with per-rank batch ``b`` on ``W`` ranks, step ``s`` of rank ``r`` takes
``perm[r::W][s*b:(s+1)*b]``, and the union over ranks is exactly ``perm[s*W*b:(s+1)*W*b]``: the
batch one process with batch ``W*b`` sees at step ``s``. Because the mean loss over equal-sized
shards is the mean of the shard means and DDP averages gradients, a ``W``-process run follows the
trajectory of the one-process run with a ``W`` times larger batch (up to float reduction order).

``set_start(batch_index, batch_size)`` skips the first ``batch_index`` batches of the current
epoch so that a resumed run continues with the very next batch instead of replaying the epoch.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class ShardedEpochSampler(Sampler[int]):
    """Deterministic, rank-sharded, resumable epoch order (see module docstring)."""

    def __init__(self, num_samples: int, *, seed: int, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, drop_last: bool = True):
        if num_samples < 1:
            raise ValueError(f"num_samples={num_samples}: the dataset is empty")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of size {world_size}")
        self.num_samples = num_samples
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.epoch = 0
        self.start = 0  # samples of this rank's shard to skip (resume mid-epoch)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's permutation; also clears any ``set_start`` offset."""
        self.epoch = epoch
        self.start = 0

    def set_start(self, batch_index: int, batch_size: int) -> None:
        """Begin the current epoch at batch ``batch_index`` (of this rank's batches of ``batch_size``)."""
        if batch_index < 0 or batch_size < 1:
            raise ValueError(f"set_start({batch_index}, {batch_size}): expected index >= 0, size >= 1")
        self.start = batch_index * batch_size

    def epoch_indices(self) -> list[int]:
        """All indices of the epoch before sharding (truncated or padded to a multiple of world_size)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        rest = len(order) % self.world_size
        if rest:
            if self.drop_last:
                order = order[: len(order) - rest]
            else:  # pad by repeating the head, as torch's DistributedSampler does
                order = order + order[: self.world_size - rest]
        return order

    def shard_size(self) -> int:
        """Indices this rank sees in a full epoch."""
        if self.drop_last:
            return self.num_samples // self.world_size
        return -(-self.num_samples // self.world_size)

    def __iter__(self) -> Iterator[int]:
        shard = self.epoch_indices()[self.rank :: self.world_size]
        return iter(shard[self.start :])

    def __len__(self) -> int:
        return max(0, self.shard_size() - self.start)
