from __future__ import annotations

import numpy as np
import pytest

from medvlp.data.segmentation import (SEGMENTATION_DATASETS, load_busi, load_cxr_lung_seg,
                                      load_segmentation, load_totalseg_slices)
from medvlp.errors import DataError


def _check_common(d, n_classes):
    assert d.masks is not None and d.masks.dtype == np.uint8
    assert d.masks.shape == d.images.shape[:3]
    assert int(d.masks.max()) == n_classes - 1 and len(d.meta["mask_classes"]) == n_classes
    assert set(d.split) == {"train", "val", "test"}
    if d.groups is not None:  # no group on two sides of the split
        for a, b in [("train", "val"), ("train", "test"), ("val", "test")]:
            assert not set(d.groups[d.split == a]) & set(d.groups[d.split == b])


def test_cxr_lung_seg(shared_data):
    d = load_cxr_lung_seg(shared_data)
    _check_common(d, 2)
    assert d.images.shape == (704, 224, 224)
    assert {s: int((d.split == s).sum()) for s in ("train", "val", "test")} == {
        "train": 493, "val": 70, "test": 141}
    for s in ("train", "val", "test"):  # both hospitals on every side (stratified by source x TB)
        assert set(d.meta["dataset"][d.split == s]) == {"montgomery", "shenzhen"}
    frac = d.masks.reshape(len(d), -1).mean(1)
    assert 0.05 < frac.min() and frac.max() < 0.5  # README: lungs cover 8-43 % of the image


@pytest.mark.slow
def test_cxr_lung_seg_cross_source(shared_data):
    x = load_cxr_lung_seg(shared_data, split="cross_source")
    assert set(x.meta["dataset"][x.split == "test"]) == {"montgomery"}
    assert set(x.meta["dataset"][x.split != "test"]) == {"shenzhen"}


def test_busi_keeps_the_given_split(shared_data):
    d = load_busi(shared_data)
    _check_common(d, 2)
    raw = np.load(shared_data / "busi/busi_seg_128.npz")
    assert np.array_equal(d.split == "test", raw["split1"] == "val")  # CMUNeXt split 1 val = test
    assert (d.split == "val").sum() == round(303 / 7) + round(149 / 7)  # 1/7 per benign/malignant
    assert not np.array_equal(load_busi(shared_data, split_index=2).split, d.split)


def test_totalseg_slices(shared_data):
    d = load_totalseg_slices(shared_data)
    _check_common(d, 5)
    assert d.meta["mask_classes"] == ["background", "liver", "spleen", "kidney", "stomach"]
    assert d.images.dtype == np.float32 and 0 <= d.images.min() and d.images.max() <= 1
    z = d.meta["slice_index"]
    assert max(z[d.split == "train"]) < min(z[d.split == "val"]) - 1  # a gap slice between slabs
    assert max(z[d.split == "val"]) < min(z[d.split == "test"]) - 1
    # display orientation: the liver (patient's right) lies on the image's left half
    liver = d.masks == 1
    cols = np.nonzero(liver)[2]
    assert cols.mean() < d.masks.shape[2] / 2


@pytest.mark.slow
def test_ham10000_seg_limit(shared_data):
    d = load_segmentation("ham10000_seg", root=shared_data, limit=120)
    _check_common(d, 2)
    assert len(d) == 120 and d.name == "ham10000_seg"


def test_registry_names_and_errors_name_the_file(tmp_path):
    assert set(SEGMENTATION_DATASETS) == {"cxr_lung_seg", "busi", "ham10000_seg", "totalseg_slices"}
    with pytest.raises(ValueError, match="unknown segmentation dataset"):
        load_segmentation("nope", root=tmp_path)
    (tmp_path / "busi").mkdir()
    bad = tmp_path / "busi" / "busi_seg_128.npz"
    np.savez(bad, images=np.zeros((2, 4, 4), np.uint8), masks=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"busi_seg_128\.npz.*missing key"):
        load_busi(tmp_path)
    np.savez(bad, images=np.zeros((2, 4, 4), np.uint8), masks=np.full((2, 4, 4), 7, np.uint8),
             image_id=np.array(["a", "b"]), label=np.zeros(2, np.uint8), split1=np.array(["train", "val"]))
    with pytest.raises(DataError, match=r"busi_seg_128\.npz \[masks\]"):
        load_busi(tmp_path)
    (tmp_path / "cxr_lung_seg").mkdir()
    (tmp_path / "cxr_lung_seg" / "cxr_lung_seg_224_index.csv").write_text(
        "image_id,dataset,tb,lung_fraction\nMCUCXR_0001_0,montgomery,0,0.2\n")
    (tmp_path / "cxr_lung_seg" / "cxr_lung_seg_224.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"cxr_lung_seg_224\.zip.*not a readable zip"):
        load_cxr_lung_seg(tmp_path)
