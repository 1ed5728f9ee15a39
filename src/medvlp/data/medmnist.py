"""MedMNIST v2 readers (official npz files, official train/val/test splits).

Files live under ``<data root>/medmnist/``; BreastMNIST and PneumoniaMNIST are also bundled with
the package and used when no data root has them.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medvlp.data.imageset import SPLITS, ImageSet
from medvlp.data.io import load_npz
from medvlp.data.root import find_file
from medvlp.errors import DataError

MEDMNIST_LICENSE = "CC BY 4.0"
MEDMNIST_CITATION = ("Yang J. et al., MedMNIST v2 - A large-scale lightweight benchmark for 2D "
                     "and 3D biomedical image classification, Scientific Data 10, 41 (2023)")


@dataclass(frozen=True)
class MedMNISTInfo:
    files: dict[int, str]  # image size -> file name
    label_names: list[str]
    modality: str
    bundled: bool
    source_citation: str
    is_3d: bool = False


MEDMNIST: dict[str, MedMNISTInfo] = {
    "pneumoniamnist": MedMNISTInfo(
        {28: "pneumoniamnist.npz"}, ["normal", "pneumonia"], "xray", True,
        "Kermany D.S. et al., Cell 172(5) (2018) 1122-1131"),
    "breastmnist": MedMNISTInfo(
        {28: "breastmnist.npz"}, ["malignant", "normal/benign"], "ultrasound", True,
        "Al-Dhabyani W. et al., Data in Brief 28 (2020) 104863"),
    "adrenalmnist3d": MedMNISTInfo(
        {28: "adrenalmnist3d.npz", 64: "adrenalmnist3d_64.npz"}, ["normal", "hyperplasia"],
        "ct_mask", False, "MedMNIST v2 (Zhongshan Hospital adrenal CT shape masks)", is_3d=True),
}
_KEYS = [f"{s}_{kind}" for s in SPLITS for kind in ("images", "labels")]


def load_medmnist(flag: str, root: str | Path | None = None, size: int | None = None) -> ImageSet:
    """Load one MedMNIST data set with its official split.

    ``size`` picks among the official resolutions present (28 for all; 64 for AdrenalMNIST3D);
    None means 28. Labels are MedMNIST's: binary, int64 (N,).
    """
    if flag not in MEDMNIST:
        raise ValueError(f"unknown MedMNIST flag {flag!r}; known: {sorted(MEDMNIST)}")
    info = MEDMNIST[flag]
    size = 28 if size is None else size
    if size not in info.files:
        raise ValueError(f"{flag}: size {size} not available; sizes: {sorted(info.files)}")
    fname = info.files[size]
    path = find_file(f"medmnist/{fname}", root, bundled=fname if info.bundled else None)
    d = load_npz(path, _KEYS)
    images, labels, split = [], [], []
    for s in SPLITS:
        x, y = d[f"{s}_images"], d[f"{s}_labels"]
        if len(x) != len(y):
            raise DataError(path, f"{s}_images has {len(x)} rows but {s}_labels has {len(y)}",
                            "one label per image")
        images.append(x)
        labels.append(y.reshape(len(y), -1)[:, 0].astype(np.int64))
        split.append(np.full(len(x), s))
    labels_all = np.concatenate(labels)
    bad = ~np.isin(labels_all, np.arange(len(info.label_names)))
    if bad.any():
        raise DataError(path, f"label values {np.unique(labels_all[bad]).tolist()} out of range",
                        f"labels in 0..{len(info.label_names) - 1}")
    name = flag if size == 28 else f"{flag}_{size}"
    return ImageSet(
        name=name, images=np.concatenate(images), labels=labels_all, task="binary",
        label_names=list(info.label_names), split=np.concatenate(split), modality=info.modality,
        groups=None, source=str(path), is_3d=info.is_3d,
        meta={"license": MEDMNIST_LICENSE,
              "citation": [MEDMNIST_CITATION, info.source_citation],
              "label_source": "official MedMNIST labels",
              "split_source": "official MedMNIST train/val/test",
              "file": str(path), "size": size},
    )
