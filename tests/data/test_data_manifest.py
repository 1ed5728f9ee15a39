import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medvlp.data.manifest import load_image_folder, load_manifest
from medvlp.errors import DataError


def _png(path, value, shape=(16, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(shape, value, np.uint8)).save(path)


def _manifest(tmp_path, n=10, bad=None, sizes=None):
    rows = []
    for i in range(n):
        rel = f"img/{i}.png"
        _png(tmp_path / rel, i * 10, (sizes or {}).get(i, (16, 16)))
        rows.append({"path": rel, "label": "sick" if i % 2 else "well", "patient": i // 2})
    if bad is not None:
        (tmp_path / rows[bad]["path"]).write_bytes(b"not a png at all")
    csv = tmp_path / "m.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def test_manifest_labels_groups_and_paths_relative_to_csv(tmp_path):
    ds = load_manifest(_manifest(tmp_path), group_col="patient")
    assert ds.images.shape == (10, 16, 16) and ds.task == "binary"
    assert ds.label_names == ["sick", "well"]
    np.testing.assert_array_equal(ds.labels, [1, 0] * 5)
    assert ds.images[3, 0, 0] == 30
    for g in np.unique(ds.groups):
        assert len(set(ds.split[ds.groups == g])) == 1


def test_manifest_skip_bad_quarantines_and_reports(tmp_path, caplog):
    csv = _manifest(tmp_path, bad=4)
    with pytest.raises(DataError, match=r"img/4\.png"):
        load_manifest(csv)
    with caplog.at_level("WARNING"):
        ds = load_manifest(csv, skip_bad=True)
    assert len(ds) == 9 and len(ds.quarantined) == 1
    assert ds.quarantined[0]["item"].endswith("img/4.png")
    assert "cannot decode" in ds.quarantined[0]["reason"]
    assert "quarantined 1" in caplog.text and "4.png" in caplog.text
    assert 4 * 10 not in ds.images[:, 0, 0]


def test_manifest_sizes_differ_needs_size(tmp_path):
    csv = _manifest(tmp_path, sizes={7: (20, 24)})
    with pytest.raises(DataError, match=r"img/7\.png.*shape \(20, 24\)"):
        load_manifest(csv)
    ds = load_manifest(csv, size=12)
    assert ds.images.shape == (10, 12, 12)


def test_manifest_missing_column_and_split_column(tmp_path):
    csv = _manifest(tmp_path)
    with pytest.raises(DataError, match=r"m\.csv.*missing column\(s\) \['diagnosis'\]"):
        load_manifest(csv, label_cols="diagnosis")
    df = pd.read_csv(csv)
    df["split"] = ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    df["a"], df["b"] = [0, 1] * 5, [1, None] * 5
    df.to_csv(csv, index=False)
    ds = load_manifest(csv, label_cols=["a", "b"], split_col="split")
    assert ds.task == "multilabel" and ds.labels.shape == (10, 2)
    assert np.isnan(ds.labels[1, 1]) and ds.labels[0, 1] == 1
    assert list(ds.split[6:8]) == ["val", "val"]


def test_image_folder_with_split_folders_and_rgb_resize(tmp_path):
    for split in ("train", "val"):
        for c, v in (("cat_a", 10), ("cat_b", 200)):
            _png(tmp_path / split / c / "x.png", v)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "train" / "cat_b" / "y.png")
    (tmp_path / "train" / "cat_b" / "notes.txt").write_text("hi")
    with pytest.raises(DataError, match="y.png"):
        load_image_folder(tmp_path)
    ds = load_image_folder(tmp_path, size=16)
    assert ds.images.shape == (5, 16, 16, 3) and ds.label_names == ["cat_a", "cat_b"]
    assert sorted(ds.split) == ["train"] * 3 + ["val"] * 2
    assert ds.meta["ignored_files"][0].endswith("notes.txt")
