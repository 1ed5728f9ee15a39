import hashlib
import shutil
import zipfile

import numpy as np
import pytest

from medvlp.data import ImageSet, list_datasets, load_dataset
from medvlp.data.ct import load_ct_volume, load_tcga_luad
from medvlp.data.ham10000 import HAM_CLASSES, load_ham10000
from medvlp.data.iu_xray import load_iu_reports, report_text
from medvlp.data.medmnist import load_medmnist
from medvlp.data.nih import NIH_LABELS, load_nih1000, load_nih_label_table, patient_split
from medvlp.data.root import bundled_dir
from medvlp.errors import DataError

BUNDLED_SHA256 = {
    "pneumoniamnist.npz": "e1792d3f03751cb101e99f19a63b3c1941436c988665f47853417b05be250cd8",
    "breastmnist.npz": "3a22d2a4625e7dd8903f0f59030e81a3d0c222bece2e5e10927456cb50efdec1",
    "nih1000_64.npz": "ccc236e115c60c7d608b568bf9c502a9717c91059fbc9d5caabe6bab4a9dcc45",
}


def _split_counts(ds: ImageSet) -> tuple[int, int, int]:
    return tuple(int((ds.split == s).sum()) for s in ("train", "val", "test"))


def _assert_groups_disjoint(ds: ImageSet) -> None:
    sides = {}
    for g, s in zip(ds.groups, ds.split):
        sides.setdefault(g, set()).add(s)
    assert all(len(v) == 1 for v in sides.values())


def test_bundled_files_match_notice():
    notice = (bundled_dir() / "NOTICE.md").read_text()
    for name, sha in BUNDLED_SHA256.items():
        assert hashlib.sha256((bundled_dir() / name).read_bytes()).hexdigest() == sha
        assert sha in notice


@pytest.mark.parametrize("flag,counts,positives", [
    ("pneumoniamnist", (4708, 524, 624), (3494, 389, 390)),
    ("breastmnist", (546, 78, 156), (399, 57, 114)),
])
def test_medmnist_2d_bundled(tmp_path, flag, counts, positives):
    ds = load_medmnist(flag, root=tmp_path)  # empty root -> bundled copy
    assert ds.source == str(bundled_dir() / f"{flag}.npz")
    assert _split_counts(ds) == counts
    assert tuple(int(ds.labels[ds.split == s].sum()) for s in ("train", "val", "test")) == positives
    assert ds.images.shape[1:] == (28, 28) and ds.images.dtype == np.uint8
    assert ds.labels.dtype == np.int64 and ds.task == "binary" and ds.meta["license"] == "CC BY 4.0"


@pytest.mark.parametrize("size", [28, 64])
def test_adrenalmnist3d(shared_data, size):
    ds = load_medmnist("adrenalmnist3d", root=shared_data, size=size)
    assert ds.is_3d and ds.images.shape[1:] == (size,) * 3
    assert _split_counts(ds) == (1188, 98, 298)
    assert int(ds.labels[ds.split == "train"].sum()) == 259
    assert ds.label_names == ["normal", "hyperplasia"]
    assert set(np.unique(ds.images)) <= {0, 255}


def test_medmnist_unknown_size():
    with pytest.raises(ValueError, match="sizes"):
        load_medmnist("breastmnist", size=64)


def test_nih1000_file_split_and_patient_resplit(tmp_path):
    ds = load_nih1000(root=tmp_path)
    assert ds.images.shape == (1000, 64, 64) and ds.labels.shape == (1000, 14)
    assert ds.labels.dtype == np.float32 and ds.label_names == NIH_LABELS
    assert _split_counts(ds) == (600, 200, 200)
    assert ds.labels.sum(0)[NIH_LABELS.index("Effusion")] == 170
    assert ds.labels.sum(0)[NIH_LABELS.index("Hernia")] == 9
    assert len(np.unique(ds.groups)) == 264
    assert "file" in ds.meta["split_source"]
    re = load_nih1000(root=tmp_path, resplit="patient", seed=3)
    _assert_groups_disjoint(re)
    assert "patient-wise" in re.meta["split_source"]
    np.testing.assert_array_equal(re.split, load_nih1000(root=tmp_path, resplit="patient",
                                                         seed=3).split)
    assert 500 <= _split_counts(re)[0] <= 700


def test_nih_label_table(shared_data):
    t = load_nih_label_table(shared_data)
    assert len(t) == 112120 and t["patient_id"].nunique() == 30805
    assert t["view_position"].value_counts().to_dict() == {"PA": 67310, "AP": 44810}
    multi = t["finding_labels"].str.contains("|", regex=False)
    assert (t[NIH_LABELS].sum(axis=1)[multi] >= 2).all()
    assert ((t["No Finding"] == 1) == (t[NIH_LABELS].sum(axis=1) == 0)).all()
    split = patient_split(t.iloc[:5000], seed=0)
    assert set(split) == {"train", "val", "test"}
    per_patient = t.iloc[:5000].assign(s=split).groupby("patient_id")["s"].nunique()
    assert (per_patient == 1).all()


def test_iu_reports(shared_data):
    df = load_iu_reports(shared_data)
    assert len(df) == 3851
    assert (df["findings"] != "").sum() == 3337 and (df["impression"] != "").sum() == 3820
    assert df["r2gen_split"].value_counts().to_dict() == {"train": 2069, "": 896, "test": 590,
                                                          "val": 296}
    assert df["n_frontal"].sum() == 3818 and df["n_lateral"].sum() == 3648
    empty = df[df["empty_report"]]
    assert len(empty) > 0 and all(report_text(r) == "" for _, r in empty.iterrows())
    row = df.iloc[0]
    assert report_text(row) == f"{row['findings']} {row['impression']}"


def test_ham10000_subset_split_and_masks(shared_data):
    ds = load_ham10000(shared_data, limit=140, with_masks=True)
    assert ds.images.shape == (140, 150, 200, 3) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (140, 150, 200) and set(np.unique(ds.masks)) <= {0, 1}
    assert ds.label_names == HAM_CLASSES and set(ds.labels) == set(range(7))
    _assert_groups_disjoint(ds)
    again = load_ham10000(shared_data, limit=140)
    np.testing.assert_array_equal(again.meta["image_ids"], ds.meta["image_ids"])
    # A subset keeps the split each image has in the full data set (split made on all rows).
    small = load_ham10000(shared_data, limit=70)
    pos = {i: s for i, s in zip(ds.meta["image_ids"], ds.split)}
    assert all(pos[i] == s for i, s in zip(small.meta["image_ids"], small.split) if i in pos)


def test_ham10000_corrupt_jpeg_named_or_quarantined(shared_data, tmp_path, caplog):
    ref = load_ham10000(shared_data, limit=20)
    ids = list(ref.meta["image_ids"])
    (tmp_path / "ham10000").mkdir()
    shutil.copy(shared_data / "ham10000" / "HAM10000_metadata.csv", tmp_path / "ham10000")
    with zipfile.ZipFile(shared_data / "ham10000" / "ham10000_images_200x150.zip") as src, \
            zipfile.ZipFile(tmp_path / "ham10000" / "ham10000_images_200x150.zip", "w") as dst:
        for i in ids:
            data = src.read(f"{i}.jpg")
            dst.writestr(f"{i}.jpg", data[:200] if i == ids[3] else data)
    with pytest.raises(DataError, match=f"ham10000_images_200x150.zip:{ids[3]}.jpg"):
        load_ham10000(tmp_path, limit=20)
    with caplog.at_level("WARNING"):
        ds = load_ham10000(tmp_path, limit=20, skip_bad=True)
    assert len(ds) == 19 and [q["item"] for q in ds.quarantined] == [f"{ids[3]}.jpg"]
    assert "quarantined 1" in caplog.text and ids[3] in caplog.text


def test_tcga_luad(shared_data):
    ds = load_tcga_luad(shared_data)
    assert ds.images.shape == (100, 256, 256) and ds.images.dtype == np.float32
    assert 0.0 <= ds.images.min() and ds.images.max() <= 1.0
    assert int(ds.labels.sum()) == 50 and ds.label_names == ["no_contrast", "contrast"]
    assert len(np.unique(ds.groups)) == 54
    _assert_groups_disjoint(ds)
    hu = load_tcga_luad(shared_data, window=None)
    assert hu.images.min() == -3024 and hu.images.max() == 3067 and "HU" in hu.meta["units"]
    # lung window: -1350 HU -> 0, 150 HU -> 1
    np.testing.assert_allclose(ds.images, np.clip((hu.images + 1350) / 1500, 0, 1), atol=1e-6)


def test_ct_volume(shared_data):
    v = load_ct_volume("chest_cta_cropped", root=shared_data)
    assert v.array.shape == (122, 102, 112) and v.spacing == (1.5, 1.5, 1.5)
    assert v.array.min() < -900 and v.array.max() > 300
    w = load_ct_volume(shared_data / "ct_volumes_totalsegmentator" / "example_ct.nii.gz",
                       window="abdomen")
    assert w.array.shape == (122, 101, 112) and w.spacing == (3.0, 3.0, 3.0)
    assert 0 <= w.array.min() and w.array.max() <= 1


def test_registry(tmp_path):
    assert list_datasets() == ["pneumoniamnist", "breastmnist", "adrenalmnist3d",
                               "adrenalmnist3d_64", "nih1000", "ham10000", "tcga_luad_contrast",
                               "cxr_lung_seg", "busi", "ham10000_seg", "totalseg_slices", "collection"]
    assert len(load_dataset("breastmnist", root=tmp_path)) == 780
    with pytest.raises(ValueError, match="unknown dataset 'chexpert'.*nih1000"):
        load_dataset("chexpert")
