"""HAM10000 dermoscopy: 10,015 RGB images (200x150) from a zip, 7 classes, lesion-wise split.

The split is made once over the whole metadata table (seeded lesion-wise 70/10/20, stratified by
diagnosis, seed :data:`HAM_SPLIT_SEED`), so an image's split does not depend on ``limit``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

from medvlp.data.imageset import ImageSet
from medvlp.data.io import load_npz, log_quarantine, read_csv_columns, read_image, resize_image
from medvlp.data.root import find_file
from medvlp.data.splits import group_split, stratified_sample
from medvlp.errors import DataError

#: DermaMNIST label order.
HAM_CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
HAM_SPLIT_SEED = 0
HAM_SPLIT_FRACTIONS = (0.7, 0.1, 0.2)
HAM_LICENSE = "CC BY-NC 4.0 (non-commercial)"
HAM_CITATION = ["Tschandl P., Rosendahl C., Kittler H., The HAM10000 dataset, a large collection "
                "of multi-source dermatoscopic images of common pigmented skin lesions, "
                "Scientific Data 5, 180161 (2018)"]
MASK_CITATION = ("Tschandl P. et al., Human-computer collaboration for skin cancer recognition, "
                 "Nature Medicine 26, 1229-1234 (2020)")
_META_COLUMNS = ["lesion_id", "image_id", "dx"]


def load_ham10000(root: str | Path | None = None, size: int | tuple[int, int] | None = None,
                  limit: int | None = None, skip_bad: bool = False,
                  with_masks: bool = False, seed: int = HAM_SPLIT_SEED) -> ImageSet:
    """Load HAM10000 (uint8 RGB (N,150,200,3) unless ``size`` resizes).

    ``limit``: a stratified, seeded subset of that many images (decoding all 10,015 JPEGs takes
    a while). ``skip_bad``: corrupt or missing JPEGs are quarantined (and logged) instead of
    raising. ``with_masks``: also load the lesion masks into ``ImageSet.masks``.
    """
    meta_path = find_file("ham10000/HAM10000_metadata.csv", root)
    zip_path = find_file("ham10000/ham10000_images_200x150.zip", root)
    meta = _read_metadata(meta_path)
    labels = meta["dx"].map({c: i for i, c in enumerate(HAM_CLASSES)}).to_numpy(np.int64)
    split = group_split(meta["lesion_id"].to_numpy(), HAM_SPLIT_FRACTIONS, seed=seed,
                        stratify=labels)
    rows = np.arange(len(meta)) if limit is None else stratified_sample(labels, limit, seed=seed)

    images, kept, quarantined = [], [], []
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(zip_path, f"not a readable zip ({e})", "a zip of ISIC_*.jpg") from e
    with zf:
        members = set(zf.namelist())
        for r in rows:
            member = f"{meta.image_id.iat[r]}.jpg"
            where = f"{zip_path}:{member}"
            try:
                if member not in members:
                    raise DataError(where, "member missing from the zip", "one JPEG per image_id")
                img = read_image(zf.read(member), name=where)
                if img.ndim != 3 or img.shape[2] != 3:
                    raise DataError(where, f"image has shape {img.shape}", "an RGB image")
            except DataError as e:
                if not skip_bad:
                    raise
                quarantined.append({"item": member, "reason": str(e)})
                continue
            images.append(img if size is None else resize_image(img, size))
            kept.append(r)
    log_quarantine("ham10000", quarantined)
    kept_idx = np.asarray(kept, dtype=np.int64)
    try:
        stacked = np.stack(images)
    except ValueError as e:  # different sizes and no size= given
        raise DataError(zip_path, f"images differ in size ({e})",
                        "all 200x150, or pass size= to resize") from e
    masks = _load_masks(root, meta, kept_idx, size) if with_masks else None
    citation = HAM_CITATION + ([MASK_CITATION] if with_masks else [])
    return ImageSet(
        name="ham10000", images=stacked, labels=labels[kept_idx], task="multiclass",
        label_names=list(HAM_CLASSES), split=split[kept_idx], modality="dermoscopy",
        groups=meta["lesion_id"].to_numpy()[kept_idx], source=str(zip_path),
        meta={"license": HAM_LICENSE, "citation": citation,
              "label_source": "HAM10000_metadata.csv dx (histopathology / follow-up / consensus "
                              "/ confocal, see dx_type)",
              "split_source": f"lesion-wise {HAM_SPLIT_FRACTIONS}, seed {seed}, stratified by dx",
              "image_ids": meta["image_id"].to_numpy()[kept_idx],
              "dx_type": meta["dx_type"].to_numpy()[kept_idx] if "dx_type" in meta else None,
              "limit": limit, "files": [str(meta_path), str(zip_path)]},
        quarantined=quarantined, masks=masks,
    )


def _read_metadata(path: Path) -> pd.DataFrame:
    meta = read_csv_columns(path, _META_COLUMNS)
    bad = sorted(set(meta["dx"]) - set(HAM_CLASSES))
    if bad:
        raise DataError(path, f"unknown dx values {bad}", f"dx in {HAM_CLASSES}")
    return meta


def _load_masks(root, meta: pd.DataFrame, rows: np.ndarray, size) -> np.ndarray:
    path = find_file("ham10000/ham10000_masks_200x150.npz", root)
    d = load_npz(path, ["masks", "image_id"])
    if not np.array_equal(d["image_id"].astype(str), meta["image_id"].to_numpy(str)):
        raise DataError(path, "image_id order differs from HAM10000_metadata.csv",
                        "row i of the masks = row i of the metadata")
    masks = d["masks"][rows]
    if size is not None:
        masks = np.stack([resize_image(m, size, nearest=True) for m in masks])
    return masks
