"""The multi-modality collection and its two-view dataset (bundled sets; real-data test skips)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from medvlp.data import load_dataset
from medvlp.data.collection import TwoViewDataset, ViewAugment, balanced_index, load_collection
from medvlp.errors import ConfigError


def test_collection_uses_train_splits_only_and_unifies_size():
    c = load_collection(sources=["pneumoniamnist", "breastmnist"], size=32, channels=1)
    n_train = {n: int((load_dataset(n).split == "train").sum()) for n in ("pneumoniamnist", "breastmnist")}
    assert c.meta["sources"] == n_train
    assert c.images.shape == (sum(n_train.values()), 32, 32) and c.images.dtype == np.uint8
    assert set(c.split) == {"train"} and c.label_names == ["ultrasound", "xray"]
    assert c.meta["modality_counts"] == {"ultrasound": n_train["breastmnist"], "xray": n_train["pneumoniamnist"]}
    rgb = load_collection(sources=["breastmnist"], size=16, channels=3)
    assert rgb.images.shape[1:] == (16, 16, 3) and np.array_equal(rgb.images[..., 0], rgb.images[..., 2])


def test_balanced_index_oversamples_minorities_to_the_largest_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 1)
    idx, dup = balanced_index(labels, seed=0)
    assert np.bincount(labels[idx]).tolist() == [10, 10, 10]
    assert dup.sum() == 16 and np.array_equal(idx[:14], np.arange(14))
    idx, dup = balanced_index(labels, enabled=False)
    assert len(idx) == 14 and not dup.any()


def test_view_boxes_locate_the_crop():
    img = np.zeros((40, 40), dtype=np.uint8)
    img[:, 20:] = 255                                          # right half white
    aug = ViewAugment(20, 1, [0.0], [1.0], scale=(0.2, 0.3), hflip=True, jitter=0.0, blur_p=0.0)
    torch.manual_seed(0)
    for _ in range(20):
        x, box = aug.view(img)
        y0, x0, y1, x1 = box.tolist()
        assert 0 <= y0 < y1 <= 1 and 0 <= min(x0, x1) and max(x0, x1) <= 1
        # The left column of the view sits at image x = x0 (x1 when flipped): its colour must agree.
        expected_white = x0 + 0.02 >= 0.5 if x0 < x1 else x0 - 0.02 >= 0.5
        if abs(x0 - 0.5) > 0.06:
            assert bool(x[0, :, 0].mean() > 0.5) == expected_white


def test_two_view_dataset_items_and_duplicates_stay_inside_their_precrop():
    c = load_collection(sources=["pneumoniamnist", "breastmnist"], size=32)
    ds = TwoViewDataset(c, ViewAugment(28, 1, [0.5], [0.5]), seed=0)
    assert len(ds) == 2 * int((c.labels == 1).sum())
    item = ds[len(ds) - 1]
    assert ds.duplicate[len(ds) - 1]
    assert item["view1"].shape == item["view2"].shape == (1, 28, 28) and item["box1"].shape == (4,)
    region = ds.regions[len(ds) - 1]
    for box in (item["box1"], item["box2"]):
        y0, x0, y1, x1 = box.tolist()
        assert region[0] - 0.05 <= y0 and y1 <= region[2] + 0.05
        assert region[1] - 0.05 <= min(x0, x1) and max(x0, x1) <= region[3] + 0.05
    area = (region[2] - region[0]) * (region[3] - region[1])
    assert 0.84 <= area <= 0.96


def test_collection_accepts_a_user_folder(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    c = load_collection(sources=[str(tmp_path), "breastmnist"], size=16)
    n_user = int((load_dataset(str(tmp_path)).split == "train").sum())
    assert c.meta["sources"][str(tmp_path)] == n_user and c.images.shape[1:] == (16, 16)


def test_collection_errors_are_clear():
    with pytest.raises(ConfigError, match="channels"):
        load_collection(sources=["breastmnist"], channels=2)
    with pytest.raises(ConfigError, match="empty"):
        load_collection(sources=[])


def test_default_collection_has_four_modalities(shared_data):
    c = load_collection(shared_data, ham_limit=300)
    assert set(c.label_names) == {"ct", "dermoscopy", "ultrasound", "xray"}
    assert c.meta["sources"]["totalseg_volumes"] > 10 and c.meta["only_train_splits"]
