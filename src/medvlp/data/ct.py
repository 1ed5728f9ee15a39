"""CT readers: 100 TCGA-LUAD chest slices (contrast vs no contrast) and NIfTI CT volumes."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from medvlp.data.imageset import ImageSet
from medvlp.data.io import CT_WINDOWS, load_npz, named_window, read_csv_columns, read_nifti
from medvlp.data.root import find_file
from medvlp.data.splits import group_split
from medvlp.errors import DataError

TCGA_LICENSE = "CC BY 3.0 (TCIA)"
TCGA_CITATION = ["Albertina B. et al., Radiology Data from The Cancer Genome Atlas Lung "
                 "Adenocarcinoma [TCGA-LUAD] collection, The Cancer Imaging Archive (2016), "
                 "doi:10.7937/K9/TCIA.2016.JGNIHEP5",
                 "Clark K. et al., The Cancer Imaging Archive (TCIA), J Digit Imaging 26(6) (2013)"]
TOTALSEG_LICENSE = "Apache-2.0 (TotalSegmentator repository test files)"
TOTALSEG_CITATION = ("Wasserthal J. et al., TotalSegmentator: Robust Segmentation of 104 Anatomic "
                     "Structures in CT Images, Radiology: AI 5(5) (2023) e230024")
_META_COLUMNS = ["dicom_name", "patient_id", "contrast"]


def load_tcga_luad(root: str | Path | None = None, window: str | None = "lung",
                   seed: int = 0) -> ImageSet:
    """100 axial chest CT slices (256x256), label = IV contrast (0 no / 1 yes).

    ``window`` names a CT window from :data:`medvlp.data.io.CT_WINDOWS` (float32 in [0, 1]);
    ``None`` keeps Hounsfield units as float32 (then *not* in [0, 1]; ``meta["units"]`` says
    so). The split is patient-wise 60/20/20 (seeded, stratified by contrast); the patient ids
    come from the metadata CSV, checked row by row against the npz.
    """
    npz_path = find_file("ct_tcga_luad/tcga_luad_ct_100_256.npz", root)
    csv_path = find_file("ct_tcga_luad/tcga_luad_ct_100_metadata.csv", root)
    d = load_npz(npz_path, ["hu", "dicom_name", "contrast"])
    meta = read_csv_columns(csv_path, _META_COLUMNS)
    if len(meta) != len(d["hu"]) or not np.array_equal(meta["dicom_name"].to_numpy(str),
                                                       d["dicom_name"].astype(str)):
        raise DataError(csv_path, "rows do not match the slices of " + str(npz_path),
                        "one row per slice in the npz order (same dicom_name)")
    labels = meta["contrast"].to_numpy(np.int64)
    if not np.array_equal(labels, d["contrast"].astype(np.int64)) or not np.isin(labels,
                                                                                 [0, 1]).all():
        raise DataError(csv_path, "contrast column disagrees with the npz or is not 0/1",
                        "contrast 0/1, equal in CSV and npz")
    groups = meta["patient_id"].to_numpy(str)
    hu = d["hu"]
    if window is None:
        images, units = hu.astype(np.float32), "HU (float32, not windowed, not in [0, 1])"
    else:
        images = named_window(hu, window)
        units = f"{window} window {CT_WINDOWS[window]} (center, width) HU -> [0, 1]"
    return ImageSet(
        name="tcga_luad_contrast", images=images, labels=labels, task="binary",
        label_names=["no_contrast", "contrast"],
        split=group_split(groups, (0.6, 0.2, 0.2), seed=seed, stratify=labels),
        modality="ct", groups=groups, source=str(npz_path),
        meta={"license": TCGA_LICENSE, "citation": TCGA_CITATION,
              "label_source": "contrast flag of the 'CT Medical Images' selection (overview.csv)",
              "split_source": f"patient-wise 60/20/20, seed {seed}, stratified by contrast",
              "units": units, "window": window, "age": meta.get("age", pd.Series()).to_numpy(),
              "files": [str(npz_path), str(csv_path)]},
    )


@dataclass
class CTVolume:
    """A CT volume: ``array`` (X, Y, Z) float32 (HU, or [0, 1] if windowed), its 4x4 voxel-to-
    world ``affine`` and voxel ``spacing`` in mm."""

    array: np.ndarray
    affine: np.ndarray
    spacing: tuple[float, float, float]
    path: Path
    units: str
    license: str = TOTALSEG_LICENSE
    citation: str = TOTALSEG_CITATION


def load_ct_volume(path_or_name: str | Path, root: str | Path | None = None,
                   window: str | None = None) -> CTVolume:
    """Read a NIfTI CT volume: a path, or a name under ``ct_volumes_totalsegmentator/`` such as
    ``"chest_cta_cropped"`` (``.nii.gz`` added when missing)."""
    p = Path(path_or_name)
    if not p.is_file():
        name = str(path_or_name)
        name = name if name.endswith((".nii", ".nii.gz")) else name + ".nii.gz"
        p = find_file(f"ct_volumes_totalsegmentator/{name}", root)
    vol, affine = read_nifti(p, ndim=3)
    spacing = tuple(float(s) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    if window is None:
        return CTVolume(vol, affine, spacing, p, "HU")
    return CTVolume(named_window(vol, window), affine, spacing, p,
                    f"{window} window {CT_WINDOWS[window]} -> [0, 1]")
