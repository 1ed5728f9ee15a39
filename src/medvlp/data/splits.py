"""Seeded split helpers. All use ``np.random.default_rng(seed)`` (never a global RNG), so the
same inputs and seed give the same result on every machine.

* :func:`group_split` assigns whole groups (patients, lesions) to train/val/test, so no group is
  ever on two sides of a split.
* :func:`k_shot` and :func:`label_fraction` pick a labelled subset from a pool (usually the train
  split) for few-shot and 1/10/100 % label-efficiency protocols.

Stratification for multilabel targets (2D label arrays) uses "any positive" (a NaN counts as not
positive), which keeps normal and abnormal images balanced without exploding the strata.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medvlp.data.imageset import SPLITS


def strata(labels: np.ndarray) -> np.ndarray:
    """One integer stratum per row: the class for (N,) labels, any-positive for (N, C) labels."""
    y = np.asarray(labels)
    if y.ndim == 2:
        return (np.nan_to_num(y.astype(np.float64), nan=0.0) > 0).any(axis=1).astype(np.int64)
    if y.ndim != 1:
        raise ValueError(f"labels must be (N,) or (N, C), got shape {y.shape}")
    return np.unique(y, return_inverse=True)[1].astype(np.int64)


def group_split(groups: Sequence, fractions: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0,
                stratify: np.ndarray | None = None, names: Sequence[str] = SPLITS) -> np.ndarray:
    """Assign each row a split name so that every group falls in exactly one split.

    Groups are shuffled within each stratum (a group's stratum is the largest stratum value
    among its rows, i.e. "has any positive" for binary/multilabel) and cut at the cumulative
    fractions, rounded, so each stratum is split in about the given proportions of *groups*.
    """
    g = np.asarray(groups)
    fr = np.asarray(fractions, dtype=np.float64)
    if len(fr) != len(names) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0):
        raise ValueError(f"fractions must be {len(names)} non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}")
    uniq, inv = np.unique(g, return_inverse=True)
    if stratify is None:
        group_stratum = np.zeros(len(uniq), dtype=np.int64)
    else:
        s = strata(stratify)
        if len(s) != len(g):
            raise ValueError(f"stratify has {len(s)} rows but groups has {len(g)}")
        group_stratum = np.full(len(uniq), -1, dtype=np.int64)
        np.maximum.at(group_stratum, inv, s)
    rng = np.random.default_rng(seed)
    group_split_idx = np.empty(len(uniq), dtype=np.int64)
    for st in np.unique(group_stratum):
        members = np.flatnonzero(group_stratum == st)
        members = members[rng.permutation(len(members))]
        cuts = np.round(np.cumsum(fr)[:-1] * len(members)).astype(int)
        for k, part in enumerate(np.split(members, cuts)):
            group_split_idx[part] = k
    return np.asarray(names)[group_split_idx[inv]]


def k_shot(labels: np.ndarray, k: int, seed: int = 0,
           pool_idx: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of exactly ``k`` examples per class (per stratum for multilabel).

    Raises ValueError naming the class when the pool has fewer than ``k`` of it.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    s, pool = _strata_and_pool(labels, pool_idx)
    rng = np.random.default_rng(seed)
    chosen = []
    for st in np.unique(strata(labels)):
        members = pool[s[pool] == st]
        if len(members) < k:
            raise ValueError(f"k_shot: class {_class_name(labels, st)} has {len(members)} "
                             f"example(s) in the pool, fewer than k={k}")
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def label_fraction(labels: np.ndarray, fraction: float, seed: int = 0,
                   pool_idx: np.ndarray | None = None) -> np.ndarray:
    """Sorted indices of a stratified ``fraction`` of the pool, at least one per class.

    Per class ``n_c = max(1, round(fraction * count_c))``; ``fraction=1`` returns the whole pool.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    s, pool = _strata_and_pool(labels, pool_idx)
    rng = np.random.default_rng(seed)
    chosen = []
    for st in np.unique(s[pool]):
        members = pool[s[pool] == st]
        n = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen))


def stratified_sample(labels: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of ``n`` rows with class proportions kept (largest remainder), >= 1 each."""
    s = strata(labels)
    classes, counts = np.unique(s, return_counts=True)
    if n >= len(s):
        return np.arange(len(s))
    if n < len(classes):
        raise ValueError(f"cannot keep one of each of {len(classes)} classes in {n} rows")
    quota = counts * n / counts.sum()
    take = np.maximum(1, np.floor(quota).astype(int))
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    i = 0
    while take.sum() < n:  # hand out the remaining rows by largest remainder
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > n:  # the ">= 1" floor can overshoot: trim the largest classes
        take[np.argmax(take)] -= 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(s == c), size=t, replace=False)
              for c, t in zip(classes, take)]
    return np.sort(np.concatenate(chosen))


def _strata_and_pool(labels: np.ndarray, pool_idx: np.ndarray | None):
    s = strata(labels)
    pool = np.arange(len(s)) if pool_idx is None else np.asarray(pool_idx)
    if pool.dtype == bool:
        pool = np.flatnonzero(pool)
    return s, pool


def _class_name(labels: np.ndarray, stratum: int) -> str:
    y = np.asarray(labels)
    if y.ndim == 2:
        return "any-positive" if stratum else "all-negative"
    return repr(np.unique(y)[stratum].item())
