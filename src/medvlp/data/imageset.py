"""``ImageSet``: the one in-memory form every reader returns and every protocol consumes."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

Task = Literal["binary", "multiclass", "multilabel"]
SPLITS = ("train", "val", "test")


@dataclass
class ImageSet:
    """Images with labels, an official (or grouped) split and provenance.

    images: (N, H, W) or (N, H, W, C) for 2D, (N, D, H, W) for 3D volumes. uint8 means the
        display range [0, 255]; float32 means already scaled to [0, 1] (e.g. a CT window applied).
    labels: binary / multiclass -> (N,) int64; multilabel -> (N, C) float32 with NaN = not known.
    split: (N,) of "train" / "val" / "test".
    groups: patient or lesion id per image (splits must never put one group on both sides).
    quarantined: items skipped under ``skip_bad=True``, each ``{"item": ..., "reason": ...}``;
        never empty silently: readers log their count and names.
    masks: optional per-image segmentation masks (N, H, W) uint8, aligned with ``images``.
    """

    name: str
    images: np.ndarray
    labels: np.ndarray
    task: Task
    label_names: list[str]
    split: np.ndarray
    modality: str = "other"
    groups: np.ndarray | None = None
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    is_3d: bool = False
    masks: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        if len(self.labels) != n or len(self.split) != n:
            raise ValueError(f"{self.name}: images ({n}), labels ({len(self.labels)}) and split "
                             f"({len(self.split)}) must have the same length")
        if self.groups is not None and len(self.groups) != n:
            raise ValueError(f"{self.name}: groups must have one entry per image")
        if self.masks is not None and len(self.masks) != n:
            raise ValueError(f"{self.name}: masks must have one entry per image")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def num_classes(self) -> int:
        return len(self.label_names)

    @property
    def num_outputs(self) -> int:
        """Width of a classification head: 1 for binary, C otherwise."""
        return 1 if self.task == "binary" else self.num_classes

    def subset(self, index: np.ndarray) -> "ImageSet":
        """A view on the rows selected by an index array or boolean mask."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            split=self.split[idx],
            groups=None if self.groups is None else self.groups[idx],
            masks=None if self.masks is None else self.masks[idx],
            meta={**self.meta, "parent_indices": idx},
            quarantined=list(self.quarantined),
        )

    def split_view(self, split: str) -> "ImageSet":
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return self.subset(self.split == split)

    def describe(self) -> str:
        counts = {s: int((self.split == s).sum()) for s in SPLITS}
        shape = "x".join(map(str, self.images.shape[1:]))
        return (f"{self.name}: {len(self)} images {shape} ({self.modality}), task={self.task}, "
                f"{self.num_classes} classes, splits {counts}")
