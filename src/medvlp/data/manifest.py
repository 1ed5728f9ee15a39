"""Users' own data: a CSV manifest or a folder of class subfolders.

Paths in a manifest are relative to the CSV's folder (or ``root_dir``). Unreadable images raise a
DataError naming the file, or with ``skip_bad=True`` are quarantined (``ImageSet.quarantined``,
logged with count and names). Images of different sizes need ``size=`` (else an error names the
first file that differs).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from medvlp.data.imageset import ImageSet, Task
from medvlp.data.io import read_images, stack_images
from medvlp.data.splits import group_split
from medvlp.errors import DataError

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val",
                  "test": "test"}
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)


def load_manifest(csv_path: str | Path, image_col: str = "path",
                  label_cols: str | Sequence[str] = "label", split_col: str | None = None,
                  group_col: str | None = None, task: Task | None = None, skip_bad: bool = False,
                  root_dir: str | Path | None = None, size: int | tuple[int, int] | None = None,
                  seed: int = 0) -> ImageSet:
    """Build an ImageSet from a CSV with one row per image.

    * one label column: values are class ids or names; ``task`` defaults to binary for two
      classes, multiclass otherwise; label_names are the sorted distinct values.
    * several label columns: multilabel, cells 0/1 or empty (-> NaN = not known).
    * ``split_col`` values train/val(valid)/test; without it, a seeded 70/10/20 split by
      ``group_col`` (or by row) stratified on the labels; ``meta["split_source"]`` says which.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError(csv_path, "manifest not found", "a CSV file")
    try:
        df = pd.read_csv(csv_path)
    except Exception as e:
        raise DataError(csv_path, f"cannot read CSV ({type(e).__name__}: {e})", "a CSV") from e
    cols = [label_cols] if isinstance(label_cols, str) else list(label_cols)
    needed = [image_col, *cols] + [c for c in (split_col, group_col) if c]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise DataError(csv_path, f"missing column(s) {missing}; has {list(df.columns)}",
                        f"columns {needed}")
    base = Path(root_dir) if root_dir is not None else csv_path.parent
    labels, names, task = _parse_labels(df, cols, task, csv_path)

    paths = [base / rel for rel in df[image_col].astype(str)]
    arrays, keep, quarantined = read_images(paths, skip_bad=skip_bad, source=csv_path)
    images = stack_images(arrays, [str(base / df[image_col].iat[i]) for i in keep], size)
    groups = None if group_col is None else df[group_col].to_numpy()[keep]
    split, split_source = _split(df, split_col, groups, labels[keep], csv_path, seed, keep)
    return ImageSet(
        name=csv_path.stem, images=images, labels=labels[keep], task=task, label_names=names,
        split=split, groups=groups, source=str(csv_path), quarantined=quarantined,
        meta={"license": "user data", "citation": None, "label_source": f"{csv_path}: {cols}",
              "split_source": split_source, "paths": df[image_col].to_numpy(str)[keep]},
    )


def load_image_folder(folder: str | Path, skip_bad: bool = False,
                      size: int | tuple[int, int] | None = None, seed: int = 0) -> ImageSet:
    """Images in ``folder/<class>/*`` (seeded stratified 70/10/20 split by image), or in
    ``folder/{train,val,test}/<class>/*`` (that split). Class names are sorted folder names;
    files that are not images are listed in ``meta["ignored_files"]`` and logged."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(folder, "image folder not found", "a folder of class subfolders")
    subdirs = sorted(d.name for d in folder.iterdir() if d.is_dir() and not d.name.startswith("."))
    split_dirs = [d for d in subdirs if d in _SPLIT_ALIASES]
    if split_dirs and len(split_dirs) != len(subdirs):
        raise DataError(folder, f"mixes split folders {split_dirs} with other folders "
                        f"{sorted(set(subdirs) - set(split_dirs))}",
                        "either only train/val/test folders or only class folders")
    roots = [(folder / d, _SPLIT_ALIASES[d]) for d in split_dirs] or [(folder, None)]
    classes = sorted({c.name for r, _ in roots for c in r.iterdir()
                      if c.is_dir() and not c.name.startswith(".")})
    if not classes:
        raise DataError(folder, "no class subfolders", "folder/<class>/<image files>")
    files, labels, split, ignored = [], [], [], []
    for r, s in roots:
        for ci, c in enumerate(classes):
            if not (r / c).is_dir():
                continue
            for f in sorted((r / c).rglob("*")):
                if not f.is_file() or f.name.startswith("."):
                    continue
                if f.suffix.lower() not in IMAGE_EXTENSIONS:
                    ignored.append(str(f))
                    continue
                files.append(f)
                labels.append(ci)
                split.append(s)
    if ignored:
        log.warning("%s: ignored %d non-image file(s): %s", folder, len(ignored),
                    ", ".join(ignored))
    arrays, keep, quarantined = read_images(files, skip_bad=skip_bad, source=folder)
    y = np.asarray(labels, dtype=np.int64)[keep]
    images = stack_images(arrays, [str(files[i]) for i in keep], size)
    if split_dirs:
        split_arr, source = np.asarray(split, dtype=object)[keep].astype(str), "split folders"
    else:
        split_arr = group_split(np.arange(len(keep)), DEFAULT_FRACTIONS, seed=seed, stratify=y)
        source = f"per-image {DEFAULT_FRACTIONS}, seed {seed}, stratified by class"
    return ImageSet(
        name=folder.name, images=images, labels=y,
        task="binary" if len(classes) == 2 else "multiclass", label_names=classes,
        split=split_arr, source=str(folder), quarantined=quarantined,
        meta={"license": "user data", "citation": None, "label_source": "class folder names",
              "split_source": source, "paths": np.asarray([str(files[i]) for i in keep]),
              "ignored_files": ignored},
    )


def _parse_labels(df: pd.DataFrame, cols: list[str], task: Task | None, csv_path: Path):
    if len(cols) > 1 or task == "multilabel":
        values = df[cols].apply(pd.to_numeric, errors="coerce")
        bad = ~(values.isin([0, 1]) | df[cols].isna())
        if bad.to_numpy().any():
            r, c = np.argwhere(bad.to_numpy())[0]
            raise DataError(csv_path, f"value {df[cols[c]].iat[r]!r} is not 0, 1 or empty",
                            "multilabel cells 0/1 or empty", record=f"row {r + 2}, {cols[c]}")
        return values.to_numpy(np.float32), list(cols), "multilabel"
    col = df[cols[0]]
    if col.isna().any():
        r = int(np.flatnonzero(col.isna().to_numpy())[0])
        raise DataError(csv_path, "missing label", "a label in every row",
                        record=f"row {r + 2}, {cols[0]}")
    classes, idx = np.unique(col.to_numpy(), return_inverse=True)
    task = task or ("binary" if len(classes) == 2 else "multiclass")
    if task == "binary" and len(classes) != 2:
        raise DataError(csv_path, f"column {cols[0]} has {len(classes)} classes", "2 for binary")
    return idx.astype(np.int64), [str(c) for c in classes], task


def _split(df, split_col, groups, labels, csv_path, seed, keep):
    if split_col is not None:
        raw = df[split_col].astype(str).str.strip().str.lower().to_numpy()[keep]
        unknown = sorted(set(raw) - set(_SPLIT_ALIASES))
        if unknown:
            raise DataError(csv_path, f"unknown values {unknown} in column {split_col}",
                            f"one of {sorted(_SPLIT_ALIASES)}")
        return np.array([_SPLIT_ALIASES[s] for s in raw]), f"column {split_col}"
    g = np.arange(len(labels)) if groups is None else groups
    split = group_split(g, DEFAULT_FRACTIONS, seed=seed, stratify=labels)
    by = "row" if groups is None else "group"
    return split, f"seeded {by}-wise {DEFAULT_FRACTIONS}, seed {seed}, stratified on labels"

