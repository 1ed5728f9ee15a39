"""Data sets by name: ``load_dataset("nih1000")``."""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any, Callable

from medvlp.data.ct import load_tcga_luad
from medvlp.data.ham10000 import load_ham10000
from medvlp.data.imageset import ImageSet
from medvlp.data.manifest import load_image_folder, load_manifest
from medvlp.data.medmnist import load_medmnist
from medvlp.data.nih import load_nih1000
from medvlp.data.segmentation import load_busi, load_cxr_lung_seg, load_ham10000_seg, load_totalseg_slices

_DATASETS: dict[str, tuple[Callable[..., ImageSet], str]] = {
    "pneumoniamnist": (partial(load_medmnist, "pneumoniamnist"),
                       "PneumoniaMNIST 28x28 pediatric chest X-ray, binary (bundled)"),
    "breastmnist": (partial(load_medmnist, "breastmnist"),
                    "BreastMNIST 28x28 breast ultrasound, binary (bundled)"),
    "adrenalmnist3d": (partial(load_medmnist, "adrenalmnist3d", size=28),
                       "AdrenalMNIST3D 28^3 adrenal shape masks, binary"),
    "adrenalmnist3d_64": (partial(load_medmnist, "adrenalmnist3d", size=64),
                          "AdrenalMNIST3D 64^3 adrenal shape masks, binary"),
    "nih1000": (load_nih1000, "NIH ChestX-ray14, 1,000 images 64x64, 14 labels (bundled)"),
    "ham10000": (load_ham10000, "HAM10000 dermoscopy 200x150 RGB, 7 classes, lesion-wise split"),
    "tcga_luad_contrast": (load_tcga_luad, "TCGA-LUAD 100 chest CT slices, contrast vs none"),
    "cxr_lung_seg": (load_cxr_lung_seg, "Montgomery+Shenzhen CXR 224 px with lung masks (704), split stratified "
                                        "by source x TB"),
    "busi": (load_busi, "BUSI breast ultrasound 128 px with lesion masks (647), CMUNeXt split 1"),
    "ham10000_seg": (load_ham10000_seg, "HAM10000 with lesion masks, lesion-wise split (limit=2000 default)"),
    "totalseg_slices": (load_totalseg_slices, "TotalSegmentator CT slab: 28 axial slices, liver/spleen/kidney/"
                                              "stomach (smoke scale, one patient)"),
    "collection": (lambda root=None, **kw: _collection(root, **kw),
                   "unlabeled multi-modality collection (train splits of X-ray/US/dermoscopy/CT sets, 64 px)"),
}


def _collection(root=None, **kw: Any) -> ImageSet:
    from medvlp.data.collection import load_collection  # lazy: it imports torch

    return load_collection(root, **kw)


def list_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`."""
    return list(_DATASETS)


def describe_datasets() -> dict[str, str]:
    """Name -> one-line description."""
    return {k: v[1] for k, v in _DATASETS.items()}


def load_dataset(name: str, root: str | Path | None = None, **kw: Any) -> ImageSet:
    """Load a data set by name; ``kw`` go to its reader (e.g. ``limit=`` for ham10000).

    Users' own data: ``name`` may also be a CSV manifest (``load_manifest``) or a folder of class
    subfolders (``load_image_folder``); ``kw`` then go to that reader.
    """
    if name not in _DATASETS:
        path = Path(name)
        if path.suffix.lower() == ".csv" and path.is_file():
            return load_manifest(path, **kw)
        if path.is_dir():
            return load_image_folder(path, **kw)
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_DATASETS)}, "
                         "or a CSV manifest / image folder path")
    reader = _DATASETS[name][0]
    try:
        return reader(root=root, **kw)
    except TypeError as e:
        raise ValueError(f"dataset {name!r}: unsupported option(s) {sorted(kw)} ({e})") from e
