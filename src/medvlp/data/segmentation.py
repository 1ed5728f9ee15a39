"""Segmentation sets: ImageSets whose ``masks`` (N, H, W) uint8 hold class maps (0 = background).

``meta["mask_classes"]`` names the classes in label order. ``labels`` carry an image-level
label used only to stratify splits and label fractions (TB, benign/malignant, diagnosis).

- ``cxr_lung_seg``: 704 chest radiographs 224 px with both-lung masks (Montgomery 138 + Shenzhen
  566). No official split and one radiograph per patient in both NLM sets, so the split is by
  image, seeded 70/10/20 and stratified by source x TB so both hospitals are on every side
  (``split="cross_source"``: train/val on Shenzhen, test on Montgomery instead).
- ``busi``: 647 breast ultrasound images 128 px with lesion masks. The folder's first CMUNeXt
  split (``split1``, index 0 of three) is kept: its 195 ``val`` images are our test split (CMUNeXt
  reports on them) and a seeded, label-stratified 1/7 of its 452 ``train`` images is our val.
- ``ham10000_seg``: :func:`medvlp.data.ham10000.load_ham10000` with masks (lesion-wise split);
  ``limit`` for a stratified subset.
- ``totalseg_slices``: axial slices of the TotalSegmentator CT slab with its organ label map.
  Of the three volumes in the folder only ``example_ct_sm`` has a label map (``example_ct`` is the
  same scan, ``example_ct_sm`` being its slices 82-111; ``chest_cta_cropped`` is unlabelled), so a
  volume-wise split is impossible: the 30 slices are split into contiguous slabs along z (train
  0-19, val 21-24, test 26-29) with one slice dropped between slabs, as adjacent 3 mm slices are
  nearly the same image. It is a smoke-scale set (20 training slices, one patient), not a
  benchmark; the split says so in ``meta["split_source"]``.
"""
from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from medvlp.data.imageset import ImageSet
from medvlp.data.io import load_npz, named_window, read_csv_columns, read_image, read_nifti
from medvlp.data.root import find_file
from medvlp.data.splits import group_split, label_fraction
from medvlp.errors import DataError

CXR_CITATION = ["Jaeger S. et al., Two public chest X-ray datasets for computer-aided screening of "
                "pulmonary diseases, Quant Imaging Med Surg 4(6):475-477 (2014)",
                "Candemir S. et al., Lung segmentation in chest radiographs using anatomical atlases "
                "with nonrigid registration, IEEE TMI 33(2):577-590 (2014)",
                "Stirenko S. et al., Chest X-ray analysis of tuberculosis by deep learning with "
                "segmentation and augmentation, IEEE ELNANO 2018 (Shenzhen masks)"]
BUSI_CITATION = ["Al-Dhabyani W. et al., Dataset of breast ultrasound images, Data in Brief 28 "
                 "(2020) 104863", "Tang F. et al., CMUNeXt, ISBI 2024 (splits)"]
#: TotalSegmentator v2 "total" ids -> our classes (both kidneys merged into one class).
TOTALSEG_CLASSES = {"liver": (5,), "spleen": (1,), "kidney": (2, 3), "stomach": (6,)}
TOTALSEG_SLABS = {"train": range(0, 20), "val": range(21, 25), "test": range(26, 30)}


def load_cxr_lung_seg(root: str | Path | None = None, split: str = "stratified",
                      seed: int = 0) -> ImageSet:
    """Montgomery + Shenzhen radiographs (224x224 uint8) with lung masks (0/1)."""
    zip_path = find_file("cxr_lung_seg/cxr_lung_seg_224.zip", root)
    csv_path = find_file("cxr_lung_seg/cxr_lung_seg_224_index.csv", root)
    idx = read_csv_columns(csv_path, ["image_id", "dataset", "tb"])
    bad = sorted(set(idx["dataset"]) - {"montgomery", "shenzhen"})
    if bad:
        raise DataError(csv_path, f"unknown dataset values {bad}", "montgomery or shenzhen",
                        record="dataset")
    images, masks = [], []
    try:
        zf = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as e:
        raise DataError(zip_path, f"not a readable zip ({e})", "images/*.png and masks/*.png") from e
    with zf:
        names = set(zf.namelist())
        for image_id in idx["image_id"]:
            pair = []
            for folder in ("images", "masks"):
                member = f"{folder}/{image_id}.png"
                if member not in names:
                    raise DataError(f"{zip_path}:{member}", "member missing from the zip",
                                    "an image and a mask per index row")
                a = read_image(zf.read(member), name=f"{zip_path}:{member}")
                if a.shape != (224, 224):
                    raise DataError(f"{zip_path}:{member}", f"shape {a.shape}", "224x224 grayscale")
                pair.append(a)
            images.append(pair[0])
            masks.append((pair[1] > 127).astype(np.uint8))
    tb = idx["tb"].to_numpy(np.int64)
    source = idx["dataset"].to_numpy(str)
    if split == "stratified":
        strat = tb + 2 * (source == "shenzhen")
        sp = group_split(idx["image_id"].to_numpy(str), (0.7, 0.1, 0.2), seed=seed, stratify=strat)
        how = f"by image (one radiograph per patient), 70/10/20, seed {seed}, stratified by source x TB"
    elif split == "cross_source":
        sp = np.full(len(idx), "test", dtype=object)
        shz = np.flatnonzero(source == "shenzhen")
        val = label_fraction(tb, 0.15, seed=seed, pool_idx=shz)
        sp[shz], sp[val] = "train", "val"
        sp = sp.astype(str)
        how = f"cross-source: Shenzhen train/val (85/15, seed {seed}), Montgomery test"
    else:
        raise ValueError(f"cxr_lung_seg: split must be 'stratified' or 'cross_source', got {split!r}")
    return ImageSet(
        name="cxr_lung_seg", images=np.stack(images), labels=tb, task="binary",
        label_names=["normal", "tuberculosis"], split=sp, modality="xray",
        groups=idx["image_id"].to_numpy(str), source=str(zip_path), masks=np.stack(masks),
        meta={"mask_classes": ["background", "lung"], "dataset": source,
              "license": "NLM public release; Shenzhen masks CC BY-NC-SA 4.0 (non-commercial)",
              "citation": CXR_CITATION, "split_source": how,
              "files": [str(zip_path), str(csv_path)]},
    )


def load_busi(root: str | Path | None = None, split_index: int = 1, seed: int = 0) -> ImageSet:
    """BUSI 128x128 uint8 with lesion masks; the CMUNeXt split ``split{split_index}``."""
    path = find_file("busi/busi_seg_128.npz", root)
    key = f"split{split_index}"
    d = load_npz(path, ["images", "masks", "image_id", "label", key])
    images, masks, labels = d["images"], d["masks"], d["label"].astype(np.int64)
    if images.ndim != 3 or masks.shape != images.shape:
        raise DataError(path, f"images {images.shape} / masks {masks.shape}", "(N,128,128) each")
    if not np.isin(masks, [0, 1]).all():
        raise DataError(path, "masks hold values other than 0/1", "binary lesion masks", record="masks")
    given = d[key].astype(str)
    if not np.isin(given, ["train", "val"]).all():
        raise DataError(path, f"{key} has values {sorted(set(given))}", "train / val", record=key)
    sp = np.where(given == "val", "test", "train").astype(object)
    val = label_fraction(labels, 1 / 7, seed=seed, pool_idx=np.flatnonzero(given == "train"))
    sp[val] = "val"
    return ImageSet(
        name="busi", images=images, labels=labels, task="binary",
        label_names=["benign", "malignant"], split=sp.astype(str), modality="ultrasound",
        groups=d["image_id"].astype(str), source=str(path), masks=masks.astype(np.uint8),
        meta={"mask_classes": ["background", "lesion"], "license": "CC BY 4.0",
              "citation": BUSI_CITATION,
              "split_source": f"CMUNeXt {key}: its val = our test; 1/7 of its train (seed {seed}, "
                              "stratified by benign/malignant) = our val; by image (no patient ids)",
              "files": [str(path)]},
    )


def load_ham10000_seg(root: str | Path | None = None, limit: int | None = 2000,
                      size: int | tuple[int, int] | None = None) -> ImageSet:
    """HAM10000 images with binary lesion masks, lesion-wise split (``limit`` images, None = all)."""
    from medvlp.data.ham10000 import load_ham10000

    data = load_ham10000(root=root, limit=limit, with_masks=True, size=size)
    data.name = "ham10000_seg"
    data.meta["mask_classes"] = ["background", "lesion"]
    return data


def read_totalseg_pair(root: str | Path | None = None):
    """``example_ct_sm`` (HU) and its aligned ``example_seg`` label map:
    ``(ct, ct_affine, seg, seg_affine, ct_path, seg_path)``; a misaligned pair is a DataError."""
    ct_path = find_file("ct_volumes_totalsegmentator/example_ct_sm.nii.gz", root)
    seg_path = find_file("ct_volumes_totalsegmentator/example_seg.nii.gz", root)
    ct, ct_aff = read_nifti(ct_path)
    seg, seg_aff = read_nifti(seg_path)
    if ct.shape != seg.shape or not np.allclose(ct_aff, seg_aff, atol=1e-3):
        raise DataError(seg_path, f"label map {seg.shape} is not aligned with {ct_path} {ct.shape}",
                        "the same shape and affine as the CT")
    return ct, ct_aff, seg, seg_aff, ct_path, seg_path


def load_totalseg_slices(root: str | Path | None = None, window: str = "abdomen") -> ImageSet:
    """Axial slices (float32 in [0, 1], ``window``) of ``example_ct_sm`` with 4 organ classes."""
    ct, ct_aff, seg, seg_aff, ct_path, seg_path = read_totalseg_pair(root)
    if ct.shape[2] != 30:
        raise DataError(ct_path, f"{ct.shape[2]} axial slices", "the 30-slice TotalSegmentator slab")
    ct, seg = _to_display(ct, ct_aff, ct_path), _to_display(seg, seg_aff, seg_path)
    labels_map = np.zeros(seg.shape, dtype=np.uint8)
    for k, ids in enumerate(TOTALSEG_CLASSES.values(), start=1):
        labels_map[np.isin(np.rint(seg).astype(np.int64), ids)] = k
    z = [i for s in TOTALSEG_SLABS.values() for i in s]
    sp = np.array([name for name, s in TOTALSEG_SLABS.items() for _ in s])
    images = named_window(ct[z], window)
    return ImageSet(
        name="totalseg_slices", images=images, labels=np.zeros(len(z), dtype=np.int64),
        task="binary", label_names=["slice"], split=sp, modality="ct",
        groups=np.array([f"example_ct_sm:z{i}" for i in z]), source=str(ct_path),
        masks=labels_map[z],
        meta={"mask_classes": ["background", *TOTALSEG_CLASSES],
              "totalseg_ids": {k: list(v) for k, v in TOTALSEG_CLASSES.items()},
              "slice_index": np.asarray(z), "window": window, "license": "Apache-2.0",
              "split_source": "one labelled volume: contiguous z-slabs train 0-19 / val 21-24 / "
                              "test 26-29 (slices 20, 25 dropped); NOT volume- or patient-wise",
              "files": [str(ct_path), str(seg_path)]},
    )


def _to_display(vol: np.ndarray, affine: np.ndarray, path: Path) -> np.ndarray:
    """(X, Y, Z) volume -> (Z, rows, cols) axial slices, anterior up, patient's right on the left."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(vol, ornt)  # voxel axes now R, A, S increasing
    if ras.ndim != 3:
        raise DataError(path, f"rank {ras.ndim}", "a 3D volume")
    return np.ascontiguousarray(np.transpose(ras[::-1, ::-1, :], (2, 1, 0)))


SEGMENTATION_DATASETS: dict[str, tuple[Any, str]] = {
    "cxr_lung_seg": (load_cxr_lung_seg, "Montgomery + Shenzhen CXR 224 px, lung masks (704)"),
    "busi": (load_busi, "BUSI breast ultrasound 128 px, lesion masks (647), CMUNeXt split 1"),
    "ham10000_seg": (load_ham10000_seg, "HAM10000 dermoscopy with lesion masks, lesion-wise split"),
    "totalseg_slices": (load_totalseg_slices, "TotalSegmentator CT slab, 30 axial slices, 4 organs"),
}


def load_segmentation(name: str, root: str | Path | None = None, **kw: Any) -> ImageSet:
    """A segmentation set by name (see :data:`SEGMENTATION_DATASETS`)."""
    if name not in SEGMENTATION_DATASETS:
        raise ValueError(f"unknown segmentation dataset {name!r}; known: "
                         f"{', '.join(SEGMENTATION_DATASETS)}")
    return SEGMENTATION_DATASETS[name][0](root=root, **kw)
