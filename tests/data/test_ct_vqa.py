"""CT VQA/report data: volume preparation and label-derived items (real data; skip without it)."""
from __future__ import annotations

import numpy as np
import pytest

from medvlp.data.ct_vqa import (DERIVED_NOTE, LETTERS, build_ct_vqa, load_totalseg, prepare_volume, resample,
                                to_ras_slices, totalseg_slabs)
from medvlp.errors import DataError


def test_resample_and_radiological_orientation():
    vol = np.zeros((4, 6, 8), np.float32)
    vol[1, 2, 3] = 1
    assert resample(vol, (2, 3, 4)).shape == (2, 3, 4)
    # identity affine = RAS+ (+x patient right). Voxel x=0 is the most LEFT one, so it is shown in
    # the last column (radiological view); y=3 (most anterior) is the first row; z=2 the last slice.
    arr = np.zeros((5, 4, 3), np.float32)
    arr[0, 3, 2] = 1
    s, _ = to_ras_slices(arr, np.eye(4))
    assert s.shape == (3, 4, 5)
    assert s[2, 0, 4] == 1
    # an LPS-oriented copy of the same data gives the same slices
    lps = np.diag([-1.0, -1.0, 1.0, 1.0])
    s2, _ = to_ras_slices(arr[::-1, ::-1, :].copy(), lps)
    assert np.array_equal(s, s2)


def test_slabs_keep_splits_apart():
    slabs = totalseg_slabs()
    train = [(a, b) for a, b, s in slabs if s == "train"]
    test = [(a, b) for a, b, s in slabs if s == "test"]
    assert max(b for _, b in train) <= min(a for a, _ in test)


@pytest.fixture(scope="module")
def ctset(shared_data):
    return build_ct_vqa(shared_data, shape=(8, 28, 28), limit_train=30, seed=3)


def test_items_are_derived_deterministic_and_volumes_stay_in_one_split(ctset, shared_data):
    again = build_ct_vqa(shared_data, shape=(8, 28, 28), limit_train=30, seed=3)
    assert [(i.prompt(), i.answer) for i in ctset.items] == [(i.prompt(), i.answer) for i in again.items]
    other = build_ct_vqa(shared_data, shape=(8, 28, 28), limit_train=30, seed=4)
    assert [i.answer for i in ctset.items] != [i.answer for i in other.items]
    assert ctset.volumes.shape[1:] == (8, 28, 28) and 0 <= ctset.volumes.min() and ctset.volumes.max() <= 1
    for it in ctset.items:
        assert it.note == DERIVED_NOTE
        assert it.split == ctset.volume_split[it.volume]
        if it.task == "closed":
            assert it.choices[LETTERS.index(it.letter)] == it.choice_text
            assert it.answer == f"{it.letter}. {it.choice_text}"
            assert f"{it.letter}. {it.choice_text}" in it.prompt()
    adrenal = [i for i in ctset.items if i.source == "adrenalmnist3d" and i.task == "open"]
    for it in adrenal:
        assert it.answer == ["normal", "hyperplasia"][ctset.volume_labels[it.volume]]
    assert len({ctset.volume_ids[i.volume] for i in ctset.split_items("train") if i.source == "adrenalmnist3d"}) == 30


def test_totalseg_sides_and_presence_follow_the_label_map(shared_data):
    _, ids, split, items = load_totalseg(shared_data, shape=(8, 28, 28))
    sides = {i.question: i.choice_text for i in items if i.qtype == "side"}
    for q, side in sides.items():
        if "liver" in q or "gallbladder" in q:
            assert side == "right", q
        if "spleen" in q:
            assert side == "left", q
    reports = [i.answer for i in items if i.task == "report"]
    assert any("right kidney (right" in r for r in reports)
    assert any("left kidney (left" in r for r in reports)
    assert set(split) == {"train", "test"}


def test_prepare_volume_nifti_and_dicom(shared_data):
    v = prepare_volume(shared_data / "ct_volumes_totalsegmentator/example_ct_sm.nii.gz", shape=(6, 28, 28))
    assert v.shape == (6, 28, 28) and v.dtype == np.float32 and 0 <= v.min() and v.max() <= 1
    d = prepare_volume(shared_data / "dicom/tcga_luad_ID_0000_AGE_0060_CONTRAST_1_CT.dcm", shape=(1, 28, 28),
                       window="lung")
    assert d.shape == (1, 28, 28) and d.std() > 0.05
    with pytest.raises(DataError):
        prepare_volume(shared_data / "README.md")
