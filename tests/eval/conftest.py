"""Fixtures: the bundled real datasets as ImageSets and as raw-pixel feature splits."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medvlp.data.imageset import ImageSet

BUNDLED = Path(__file__).resolve().parents[2] / "src" / "medvlp" / "data" / "bundled"


def medmnist_imageset(name: str, label_names: list[str]) -> ImageSet:
    d = np.load(BUNDLED / f"{name}.npz")
    splits = ("train", "val", "test")
    return ImageSet(
        name=name,
        images=np.concatenate([d[f"{s}_images"] for s in splits]),
        labels=np.concatenate([d[f"{s}_labels"][:, 0] for s in splits]).astype(np.int64),
        task="binary", label_names=label_names,
        split=np.concatenate([np.full(len(d[f"{s}_labels"]), s) for s in splits]),
        modality="xray")


def nih_imageset() -> ImageSet:
    d = np.load(BUNDLED / "nih1000_64.npz")
    split = np.where(d["split"] == "valid", "val", d["split"])
    return ImageSet(name="nih1000", images=d["images"], labels=d["labels"].astype(np.float32),
                    task="multilabel", label_names=[str(n) for n in d["label_names"]],
                    split=split, groups=d["patient_id"], modality="xray")


def raw_pixel_splits(ds: ImageSet) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    x = ds.images.reshape(len(ds), -1).astype(np.float32) / 255.0
    return {s: (x[ds.split == s], ds.labels[ds.split == s]) for s in ("train", "val", "test")}


@pytest.fixture(scope="session")
def pneumonia() -> ImageSet:
    return medmnist_imageset("pneumoniamnist", ["normal", "pneumonia"])


@pytest.fixture(scope="session")
def pneumonia_pixels(pneumonia):
    return raw_pixel_splits(pneumonia)


@pytest.fixture(scope="session")
def nih() -> ImageSet:
    return nih_imageset()


@pytest.fixture(scope="session")
def nih_pixels(nih):
    return raw_pixel_splits(nih)
