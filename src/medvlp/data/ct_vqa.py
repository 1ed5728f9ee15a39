"""3D CT for VQA and report generation: volume preparation and label-DERIVED questions/reports.

Volumes: NIfTI (via :func:`medvlp.data.io.read_nifti`, reoriented to RAS) or a DICOM series (via
:func:`medvlp.data.io.read_dicom`, sorted by slice position) -> a CT window -> ``(S, H, W)``
float32 in [0, 1], axial slices from inferior to superior, rows anterior -> posterior, columns
patient right -> left (radiological view: the patient's right on the image's left), trilinearly resampled to the requested shape.

Text: there are no real CT reports or questions here. Every question, answer and report is
DERIVED from real labels (:data:`DERIVED_NOTE` is written into every item and output):

- AdrenalMNIST3D (normal vs hyperplasia, MedMNIST official splits): a closed multiple-choice
  question, an open question, and a one-line report (label + gland size tertile of the mask).
- The TotalSegmentator label map aligned with ``example_ct_sm`` (one labelled scan): axial
  sub-volumes (slabs) with questions on which organs are present, on which side (organ
  centroid vs the spinal midline, in world mm), in which slices, which is larger, and a short
  structured report. The split keeps slabs apart: train slabs lie in slices [0, 20), test slabs
  in [20, 30), no slab overlaps another split (same patient, so this is NOT a patient split).

Everything is deterministic given ``seed``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from medvlp.data.io import named_window, read_dicom, read_nifti
from medvlp.errors import DataError

DERIVED_NOTE = "derived from labels (no real reports or questions)"
LETTERS = "ABCDEFGH"

# TotalSegmentator v2 task "total": the label ids used here (grouped into question-level organs).
TOTALSEG_ORGANS: dict[str, tuple[int, ...]] = {
    "spleen": (1,), "right kidney": (2,), "left kidney": (3,), "gallbladder": (4,), "liver": (5,),
    "stomach": (6,), "pancreas": (7,), "right adrenal gland": (8,), "left adrenal gland": (9,),
    "left lung": (10, 11), "right lung": (12, 13, 14), "esophagus": (15,), "trachea": (16,),
    "thyroid gland": (17,), "small bowel": (18,), "duodenum": (19,), "colon": (20,),
    "urinary bladder": (21,), "heart": (51,), "aorta": (52,), "inferior vena cava": (63,),
    "portal and splenic vein": (64,), "spinal cord": (79,), "brain": (90,),
    "femur": (75, 76), "sternum": (116,),
}
VERTEBRAE = {26: "S1", 27: "L5", 28: "L4", 29: "L3", 30: "L2", 31: "L1", 32: "T12", 33: "T11",
             34: "T10", 35: "T9", 36: "T8", 37: "T7", 38: "T6", 39: "T5", 40: "T4", 41: "T3"}
_MIDLINE_IDS = (79, *VERTEBRAE)  # spinal cord and vertebrae define the body midline


@dataclass
class CTItem:
    """One prompt/target pair on one volume. ``task``: report | closed | open."""

    volume: int                      # index into CTVQASet.volumes
    task: Literal["report", "closed", "open"]
    question: str
    answer: str                      # the target text (closed: "B. hyperplasia")
    split: str
    source: str
    qtype: str
    choices: list[str] | None = None
    letter: str | None = None
    choice_text: str | None = None
    note: str = DERIVED_NOTE

    def prompt(self) -> str:
        """The instruction given to the LM (choices spelt out for closed questions)."""
        if self.choices:
            opts = " ".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(self.choices))
            return f"{self.question} Choices: {opts}. Answer:"
        return f"{self.question} Answer:"


@dataclass
class CTVQASet:
    volumes: np.ndarray              # (V, S, H, W) float32 in [0, 1]
    volume_ids: list[str]
    volume_split: np.ndarray         # (V,) train/val/test
    items: list[CTItem]
    volume_labels: np.ndarray | None = None   # AdrenalMNIST3D class per volume (-1 elsewhere)
    meta: dict[str, Any] = field(default_factory=dict)

    def split_items(self, split: str, tasks: tuple[str, ...] | None = None) -> list[CTItem]:
        return [it for it in self.items if it.split == split and (tasks is None or it.task in tasks)]


def resample(vol: np.ndarray, shape: tuple[int, int, int], nearest: bool = False) -> np.ndarray:
    """Trilinear (or nearest) resampling of ``(S, H, W)`` to ``shape``."""
    import torch
    import torch.nn.functional as F

    t = torch.as_tensor(np.ascontiguousarray(vol), dtype=torch.float32)[None, None]
    mode = "nearest" if nearest else "trilinear"
    out = F.interpolate(t, size=tuple(shape), mode=mode, **({} if nearest else {"align_corners": False}))
    return out[0, 0].numpy()


def to_ras_slices(arr: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X, Y, Z) voxel array + affine -> ``(S, H, W)`` radiological axial slices and the RAS affine."""
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    ras = nib.orientations.apply_orientation(arr, ornt)
    ras_affine = affine @ nib.orientations.inv_ornt_aff(ornt, arr.shape)
    # nibabel RAS+: +x = patient right, +y = anterior, +z = superior. Slices along z; rows
    # anterior -> posterior; columns patient right -> left, i.e. x decreasing.
    return np.ascontiguousarray(np.transpose(ras[::-1, ::-1, :], (2, 1, 0))), ras_affine


def prepare_volume(path: str | Path, *, shape: tuple[int, int, int] | None = None,
                   window: str = "abdomen") -> np.ndarray:
    """A NIfTI file, a DICOM file, or a folder of DICOM files -> windowed ``(S, H, W)`` in [0, 1]."""
    p = Path(path)
    if p.is_dir():
        vol = read_dicom_series(sorted(x for x in p.iterdir() if x.is_file()))
    elif p.name.endswith((".nii", ".nii.gz")):
        arr, affine = read_nifti(p, ndim=3)
        vol, _ = to_ras_slices(arr, affine)
    elif p.suffix.lower() in (".dcm", ".dicom", ""):
        vol = read_dicom_series([p])
    else:
        raise DataError(p, "unknown volume format", "a .nii/.nii.gz file, a .dcm file or a DICOM folder")
    vol = named_window(vol, window)
    return resample(vol, shape) if shape is not None else vol.astype(np.float32)


def read_dicom_series(paths: list[Path]) -> np.ndarray:
    """HU ``(S, H, W)`` from DICOM slices sorted by ImagePositionPatient z (else InstanceNumber)."""
    import pydicom

    if not paths:
        raise DataError(None, "empty DICOM series", "one or more DICOM files")
    keyed = []
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        pos = getattr(ds, "ImagePositionPatient", None)
        keyed.append((float(pos[2]) if pos is not None else float(getattr(ds, "InstanceNumber", 0)), str(p), p))
    slices = [read_dicom(p) for _, _, p in sorted(keyed)]
    if len({s.shape for s in slices}) != 1:
        raise DataError(paths[0].parent, "slices of different sizes", "one series with equal slice sizes")
    return np.stack(slices)


def _closed(rng: np.random.Generator, right: str, wrong: list[str]) -> tuple[list[str], str]:
    choices = [right, *wrong]
    rng.shuffle(choices)
    return choices, LETTERS[choices.index(right)]


def _closed_item(vol: int, rng, question: str, right: str, wrong: list[str], split: str, source: str,
                 qtype: str) -> CTItem:
    choices, letter = _closed(rng, right, wrong)
    return CTItem(vol, "closed", question, f"{letter}. {right}", split, source, qtype,
                  choices=choices, letter=letter, choice_text=right)


_ADRENAL_REPORT = {0: ["Adrenal gland of normal shape, no hyperplasia.",
                       "Normal adrenal gland morphology."],
                   1: ["Adrenal gland enlarged in shape, consistent with hyperplasia.",
                       "Adrenal hyperplasia."]}


def adrenal_items(labels: np.ndarray, split: np.ndarray, voxels: np.ndarray, tert: np.ndarray,
                  seed: int, source_index: np.ndarray, offset: int = 0) -> list[CTItem]:
    """Closed, open and report items for each AdrenalMNIST3D volume (label 0 normal, 1 hyperplasia);
    ``voxels``: mask size per volume, ``tert``: its tertiles over the official train split. Each
    volume draws from its own generator ``(seed, source_index)``, so a volume's items do not
    depend on which other volumes are loaded."""
    names = ["normal", "hyperplasia"]
    items = []
    src = "adrenalmnist3d"
    for i, (y, s, n) in enumerate(zip(labels.tolist(), split.tolist(), voxels.tolist())):
        v = offset + i
        rng = np.random.default_rng([seed, int(source_index[i])])
        items.append(_closed_item(v, rng, "Is the adrenal gland in this CT mask normal or hyperplastic?",
                                  names[y], [names[1 - y]], s, src, "diagnosis"))
        items.append(CTItem(v, "open", "What is the diagnosis of the adrenal gland?", names[y], s, src,
                            "diagnosis"))
        size = "small" if n < tert[0] else "medium" if n < tert[1] else "large"
        text = f"{_ADRENAL_REPORT[y][int(rng.integers(2))]} Gland size {size}."
        items.append(CTItem(v, "report", "Write a one-line report for this adrenal CT mask.", text, s, src,
                            "report"))
    return items


def load_adrenal(root: str | Path | None = None, shape: tuple[int, int, int] = (16, 28, 28),
                 limit_train: int | None = None, seed: int = 0):
    """AdrenalMNIST3D volumes resampled to ``shape``: (volumes, labels, split, ids, mask voxels,
    voxel tertiles of the full official train split). ``limit_train`` keeps that many train
    volumes (seeded); val and test are always complete, so their targets never change."""
    from medvlp.data import load_dataset

    ds = load_dataset("adrenalmnist3d", root=root)
    all_vox = (ds.images > 127).sum(axis=(1, 2, 3))
    tert = np.quantile(all_vox[ds.split == "train"], [1 / 3, 2 / 3])
    keep = np.ones(len(ds.labels), bool)
    if limit_train is not None:
        tr = np.flatnonzero(ds.split == "train")
        drop = np.random.default_rng(seed).permutation(tr)[limit_train:]
        keep[drop] = False
    idx = np.flatnonzero(keep)
    vols = np.stack([resample(ds.images[i].astype(np.float32) / 255.0, shape) for i in idx])
    return (vols, np.asarray(ds.labels)[idx].astype(int), np.asarray(ds.split)[idx], [f"adrenal_{i}" for i in idx],
            all_vox[idx], tert)


def _organ_stats(seg: np.ndarray, z0: int, z1: int, x_mm: np.ndarray) -> dict[str, dict[str, Any]]:
    """Per question-level organ in slab [z0, z1): voxel count, slice range, centroid x (mm)."""
    slab = seg[z0:z1]
    out = {}
    for organ, ids in TOTALSEG_ORGANS.items():
        m = np.isin(slab, ids)
        n = int(m.sum())
        if n < 20:
            continue
        zs = np.flatnonzero(m.any(axis=(1, 2)))
        cols = np.nonzero(m)[2]
        out[organ] = {"voxels": n, "first": int(zs[0]), "last": int(zs[-1]),
                      "x_mm": float(x_mm[cols].mean()), "fraction": n / m.size}
    mid = np.isin(slab, _MIDLINE_IDS)
    midline = float(x_mm[np.nonzero(mid)[2]].mean()) if mid.any() else float(x_mm.mean())
    for st in out.values():
        dx = st["x_mm"] - midline
        st["side"] = "midline" if abs(dx) < 15 else ("right" if dx > 0 else "left")  # RAS+: +x = right
    levels = [VERTEBRAE[i] for i in sorted(VERTEBRAE, reverse=True) if (slab == i).sum() >= 20]
    out["_levels"] = levels  # type: ignore[assignment]
    return out


def _size_word(frac: float) -> str:
    return "large" if frac > 0.05 else "medium" if frac > 0.01 else "small"


def totalseg_items(seg: np.ndarray, x_mm: np.ndarray, slabs: list[tuple[int, int, str]], seed: int,
                   offset: int = 0) -> list[CTItem]:
    """Items for each slab ``(z0, z1, split)`` of the label map ``seg`` (S, H, W); one generator
    ``(seed, z0, z1)`` per slab."""
    items: list[CTItem] = []
    src = "totalsegmentator:example_seg"
    all_organs = list(TOTALSEG_ORGANS)
    for j, (z0, z1, split) in enumerate(slabs):
        v = offset + j
        rng = np.random.default_rng([seed, 1000 + z0, z1])
        st = _organ_stats(seg, z0, z1, x_mm)
        levels = st.pop("_levels")
        present = sorted(st, key=lambda o: -st[o]["voxels"])
        absent = [o for o in all_organs if o not in st]
        if not present:
            continue
        o = present[int(rng.integers(len(present)))]
        wrong = list(rng.choice(absent, size=min(3, len(absent)), replace=False))
        items.append(_closed_item(v, rng, "Which of these organs is visible in this CT sub-volume?", o, wrong,
                                  split, src, "organ"))
        sided = [p for p in present if not p.startswith(("left ", "right "))]
        if sided:
            o = sided[int(rng.integers(len(sided)))]
            side = st[o]["side"]
            items.append(_closed_item(v, rng, f"On which side of the body is the {o}?", side,
                                      [s for s in ("left", "right", "midline") if s != side], split, src, "side"))
        if len(present) >= 2:
            a, b = rng.choice(len(present), size=2, replace=False)
            big, small = (present[a], present[b]) if a < b else (present[b], present[a])
            items.append(_closed_item(v, rng, f"Which occupies more volume here, the {present[a]} or the "
                                      f"{present[b]}?", big, [small], split, src, "size"))
        items.append(CTItem(v, "open", "Which major organs are visible in this sub-volume?",
                            ", ".join(present[:4]), split, src, "organ"))
        o = present[int(rng.integers(len(present)))]
        items.append(CTItem(v, "open", f"In which slices does the {o} appear?",
                            f"slices {st[o]['first'] + 1} to {st[o]['last'] + 1} of {z1 - z0}", split, src, "location"))
        parts = [f"{p} ({st[p]['side']}, {_size_word(st[p]['fraction'])})" for p in present[:6]]
        level = f" Vertebral levels {levels[0]} to {levels[-1]}." if levels else ""
        items.append(CTItem(v, "report", "Write a short structured report for this CT sub-volume.",
                            "Visible: " + "; ".join(parts) + "." + level, split, src, "report"))
    return items


def totalseg_slabs(lengths: tuple[int, ...] = (6, 8, 10), test_from: int = 20, n_slices: int = 30):
    """Slabs ``(z0, z1, split)`` entirely below ``test_from`` (train) or entirely above (test)."""
    slabs = []
    for n in lengths:
        slabs += [(z, z + n, "train") for z in range(0, test_from - n + 1)]
        slabs += [(z, z + n, "test") for z in range(test_from, n_slices - n + 1)]
    return slabs


def load_totalseg(root: str | Path | None = None, shape: tuple[int, int, int] = (16, 28, 28),
                  window: str = "abdomen", seed: int = 0, offset: int = 0):
    """Slabs of ``example_ct_sm`` with items from ``example_seg``: (volumes, ids, split, items)."""
    from medvlp.data.segmentation import read_totalseg_pair

    ct, aff, seg, _, _, _ = read_totalseg_pair(root)
    ct_s, ras_aff = to_ras_slices(ct, aff)
    seg_s, _ = to_ras_slices(np.rint(seg).astype(np.int16), aff)
    # column c of the radiological slice is RAS voxel x = nx - 1 - c; its world x in mm:
    nx = ct_s.shape[2]
    x_mm = ras_aff[0, 0] * (nx - 1 - np.arange(nx)) + ras_aff[0, 3]
    slabs = totalseg_slabs(n_slices=ct_s.shape[0])
    win = named_window(ct_s, window)
    vols = np.stack([resample(win[z0:z1], shape) for z0, z1, _ in slabs])
    items = totalseg_items(seg_s, x_mm, slabs, seed, offset)
    return vols, [f"example_ct_sm[z{z0}:{z1}]" for z0, z1, _ in slabs], np.array([s for *_, s in slabs]), items


def build_ct_vqa(root: str | Path | None = None, *, shape: tuple[int, int, int] = (16, 28, 28),
                 sources: tuple[str, ...] = ("adrenalmnist3d", "totalseg"), seed: int = 0,
                 limit_train: int | None = None) -> CTVQASet:
    """The CT VQA/report set: volumes + derived items from the requested sources."""
    vols, ids, splits, items, labels = [], [], [], [], []
    n = 0
    if "adrenalmnist3d" in sources:
        v, y, s, i, vox, tert = load_adrenal(root, shape, limit_train, seed)
        items += adrenal_items(y, s, vox, tert, seed, np.array([int(x.split("_")[1]) for x in i]), n)
        vols.append(v), ids.extend(i), splits.append(s), labels.append(y)
        n += len(v)
    if "totalseg" in sources:
        v, i, s, it = load_totalseg(root, shape, seed=seed, offset=n)
        items += it
        vols.append(v), ids.extend(i), splits.append(s), labels.append(np.full(len(v), -1))
        n += len(v)
    unknown = set(sources) - {"adrenalmnist3d", "totalseg"}
    if unknown or not vols:
        raise DataError(None, f"sources={sources}", "a non-empty subset of ('adrenalmnist3d', 'totalseg')")
    return CTVQASet(np.concatenate(vols).astype(np.float32), ids, np.concatenate(splits), items,
                    np.concatenate(labels), {"note": DERIVED_NOTE, "shape": list(shape), "seed": seed,
                                             "sources": list(sources)})
