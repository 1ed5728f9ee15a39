"""NIH ChestX-ray14: the full label table and the 1,000-image 64x64 subset (``nih1000``).

Patient-wise splits: the file's own split of nih1000 lets a patient appear in more than one split
(as its source arranged it). ``load_nih1000(resplit="patient")`` replaces it by a seeded
patient-wise 60/20/20 split; for the full table use :func:`patient_split`::

    table = load_nih_label_table()
    table["split"] = patient_split(table, seed=0)
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import pandas as pd

from medvlp.data.imageset import ImageSet
from medvlp.data.io import load_npz
from medvlp.data.root import find_file
from medvlp.data.splits import group_split
from medvlp.errors import DataError

NIH_LABELS = ["Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule",
              "Pneumonia", "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis",
              "Pleural_Thickening", "Hernia"]
NIH_LICENSE = "NIH Clinical Center release, no restriction on use (acknowledge the NIH CC)"
NIH_CITATION = ["Wang X. et al., ChestX-ray8: Hospital-scale chest X-ray database and benchmarks "
                "on weakly-supervised classification and localization of common thorax diseases, "
                "CVPR 2017",
                "Cohen J.P. et al., TorchXRayVision, MIDL 2022 (CSV packaging)"]
_NPZ_KEYS = ["images", "labels", "label_names", "patient_id", "split", "image_index",
             "view_position"]
_TABLE_COLUMNS = {"Image Index": "image_index", "Finding Labels": "finding_labels",
                  "Follow-up #": "follow_up", "Patient ID": "patient_id",
                  "Patient Age": "patient_age", "Patient Gender": "patient_gender",
                  "View Position": "view_position"}


def load_nih1000(root: str | Path | None = None, resplit: Literal["file", "patient"] = "file",
                 seed: int = 0) -> ImageSet:
    """1,000 NIH ChestX-ray14 radiographs, 64x64 uint8, 14 multilabel targets (float32).

    ``resplit="file"`` keeps the file's train/valid/test (valid -> val; patients may repeat
    across splits); ``resplit="patient"`` makes a seeded patient-wise 60/20/20 split stratified
    on "any finding". ``meta["split_source"]`` records which one was used.
    """
    path = find_file("nih_chestxray14/nih1000_64.npz", root, bundled="nih1000_64.npz")
    d = load_npz(path, _NPZ_KEYS)
    names = [str(n) for n in d["label_names"]]
    if names != NIH_LABELS:
        raise DataError(path, f"label_names are {names}", f"the 14 NIH labels {NIH_LABELS}")
    labels = d["labels"].astype(np.float32)
    groups = d["patient_id"].astype(np.int64)
    if resplit == "file":
        mapping = {"train": "train", "valid": "val", "val": "val", "test": "test"}
        raw = [str(s) for s in d["split"]]
        unknown = sorted(set(raw) - set(mapping))
        if unknown:
            raise DataError(path, f"unknown split values {unknown}", "train / valid / test")
        split = np.array([mapping[s] for s in raw])
        split_source = "file (source's train/valid/test; patients may repeat across splits)"
    elif resplit == "patient":
        split = group_split(groups, (0.6, 0.2, 0.2), seed=seed, stratify=labels)
        split_source = f"patient-wise 60/20/20, seed {seed}, stratified on any finding"
    else:
        raise ValueError(f"resplit must be 'file' or 'patient', got {resplit!r}")
    return ImageSet(
        name="nih1000", images=d["images"], labels=labels, task="multilabel", label_names=names,
        split=split, modality="xray", groups=groups, source=str(path),
        meta={"license": NIH_LICENSE, "citation": NIH_CITATION,
              "label_source": "NIH text-mined labels, Data_Entry_2017_v2020 (2020 revision)",
              "split_source": split_source, "file": str(path),
              "image_index": d["image_index"], "view_position": d["view_position"]},
    )


def load_nih_label_table(root: str | Path | None = None) -> pd.DataFrame:
    """The full ChestX-ray14 table (112,120 rows): one 0/1 int8 column per label + "No Finding",
    and image_index, patient_id, view_position, patient_age, patient_gender, follow_up,
    finding_labels (raw)."""
    path = find_file("nih_chestxray14/Data_Entry_2017_v2020.csv.gz", root)
    try:
        raw = pd.read_csv(path)
    except Exception as e:
        raise DataError(path, f"cannot read CSV ({type(e).__name__}: {e})",
                        "the gzipped ChestX-ray14 label table") from e
    missing = [c for c in _TABLE_COLUMNS if c not in raw.columns]
    if missing:
        raise DataError(path, f"missing column(s) {missing}", f"columns {list(_TABLE_COLUMNS)}")
    table = raw[list(_TABLE_COLUMNS)].rename(columns=_TABLE_COLUMNS)
    onehot = table["finding_labels"].astype(str).str.get_dummies(sep="|")
    unknown = sorted(set(onehot.columns) - set(NIH_LABELS) - {"No Finding"})
    if unknown:
        raise DataError(path, f"unknown finding labels {unknown}",
                        f"labels among {NIH_LABELS + ['No Finding']}")
    for name in NIH_LABELS + ["No Finding"]:
        table[name] = (onehot[name] if name in onehot else 0)
        table[name] = table[name].astype(np.int8)
    return table


def patient_split(table: pd.DataFrame, fractions: Sequence[float] = (0.6, 0.2, 0.2),
                  seed: int = 0) -> np.ndarray:
    """Seeded patient-wise split of a label table (stratified on "any of the 14 findings")."""
    return group_split(table["patient_id"].to_numpy(), fractions, seed=seed,
                       stratify=table[NIH_LABELS].to_numpy(dtype=np.float32))
