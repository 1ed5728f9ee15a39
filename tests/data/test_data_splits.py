import numpy as np
import pytest

from medvlp.data.splits import group_split, k_shot, label_fraction, stratified_sample


def test_group_split_keeps_groups_whole_and_is_seeded():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 300, size=2000)
    labels = rng.integers(0, 2, size=2000)
    split = group_split(groups, (0.6, 0.2, 0.2), seed=5, stratify=labels)
    for g in np.unique(groups):
        assert len(set(split[groups == g])) == 1
    np.testing.assert_array_equal(split, group_split(groups, seed=5, stratify=labels))
    assert not np.array_equal(split, group_split(groups, seed=6, stratify=labels))
    n_groups = {s: len(np.unique(groups[split == s])) for s in ("train", "val", "test")}
    assert abs(n_groups["train"] - 0.6 * len(np.unique(groups))) <= 3


def test_k_shot_exact_per_class_and_pool():
    labels = np.repeat([0, 1, 2], [50, 30, 20])
    pool = np.arange(0, 100, 2)
    idx = k_shot(labels, 5, seed=1, pool_idx=pool)
    assert np.bincount(labels[idx]).tolist() == [5, 5, 5] and np.isin(idx, pool).all()
    np.testing.assert_array_equal(idx, k_shot(labels, 5, seed=1, pool_idx=pool))
    with pytest.raises(ValueError, match="class 2 has 10"):
        k_shot(labels, 11, seed=0, pool_idx=pool)


def test_label_fraction_counts_and_minimum_one():
    labels = np.repeat([0, 1], [900, 100])
    for frac, expected in ((0.01, [9, 1]), (0.1, [90, 10]), (1.0, [900, 100])):
        assert np.bincount(labels[label_fraction(labels, frac, seed=0)]).tolist() == expected
    rare = np.repeat([0, 1], [990, 10])
    assert np.bincount(rare[label_fraction(rare, 0.01, seed=0)]).tolist() == [10, 1]


def test_multilabel_stratifies_on_any_positive():
    y = np.zeros((40, 3), np.float32)
    y[:10, 1] = 1
    y[10:12, 2] = np.nan
    idx = k_shot(y, 4, seed=0)
    assert (y[idx, 1] == 1).sum() == 4 and len(idx) == 8


def test_stratified_sample_proportions():
    labels = np.repeat(np.arange(3), [700, 250, 50])
    idx = stratified_sample(labels, 100, seed=0)
    assert len(idx) == 100 and np.bincount(labels[idx]).tolist() == [70, 25, 5]
