"""LVM-Med's unlabeled multi-modality collection and its two-view dataset (METHODS.md §4.3).

:func:`load_collection` mixes the **train splits** of several data sets into one ImageSet (so
downstream val/test images stay unseen): chest X-ray (PneumoniaMNIST, NIH-1000), ultrasound
(BreastMNIST), dermoscopy (HAM10000, ``ham_limit``), CT (TCGA-LUAD slices in the lung window, and
axial slices of the TotalSegmentator volumes, which no downstream task uses). Users' CSV manifests
and image folders are sources too (via :func:`medvlp.data.load_dataset`). Every image is resized to
``size``² and converted to ``channels`` (1 = luma, 3 = grey repeated), stored uint8. The label of an
image is its modality (never used for training; it drives the balancing and the report).

:class:`TwoViewDataset` draws both augmented views of an image **and the crop box of each**, which
LVM-Med's local similarity needs. Modality balancing follows the paper: minority modalities are
oversampled by duplication up to the largest modality's count, and each duplicate is first cropped
to a random 85–95 % of the image area (these crops are not SSL views; the views are drawn inside).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from medvlp.data.imageset import ImageSet
from medvlp.data.transforms import TrainAugment

log = logging.getLogger(__name__)

DEFAULT_SOURCES = ["pneumoniamnist", "nih1000", "breastmnist", "ham10000", "tcga_luad_contrast",
                   "totalseg_volumes"]
TOTALSEG_VOLUMES = ("example_ct", "chest_cta_cropped")


def _to_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    return (np.clip(images.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)


def _unify(images: np.ndarray, size: int, channels: int) -> np.ndarray:
    """(N, H, W[, C]) uint8/float[0,1] -> (N, size, size) or (N, size, size, 3) uint8."""
    x = torch.from_numpy(_to_uint8(images).astype(np.float32))
    x = x.unsqueeze(1) if x.ndim == 3 else x[..., :3].permute(0, 3, 1, 2)
    if x.shape[1] == 3 and channels == 1:
        x = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    elif x.shape[1] == 1 and channels == 3:
        x = x.expand(-1, 3, -1, -1)
    out = []
    for chunk in x.split(512):
        out.append(F.interpolate(chunk, size=(size, size), mode="bilinear", align_corners=False, antialias=True))
    y = torch.cat(out).round().clamp(0, 255).to(torch.uint8)
    return y[:, 0].numpy() if channels == 1 else y.permute(0, 2, 3, 1).numpy()


def _volume_slices(root, step: int) -> tuple[np.ndarray, str]:
    """Axial slices (every ``step``-th, abdomen window, mostly-empty ones dropped) of the volumes."""
    from medvlp.data.ct import load_ct_volume

    slices = []
    for name in TOTALSEG_VOLUMES:
        vol = load_ct_volume(name, root=root, window="abdomen" if name.startswith("example") else "lung")
        arr = np.transpose(vol.array, (2, 1, 0))[:, ::-1]  # (Z, Y, X), anterior up
        for z in range(0, arr.shape[0], step):
            s = arr[z]
            if (s > 0.05).mean() > 0.2:
                slices.append(_unify(s[None], 64, 1)[0])
    return np.stack(slices), "TotalSegmentator example CT volumes (Apache-2.0), axial slices"


def load_collection(root: str | Path | None = None, *, sources: Sequence[str] | None = None,
                    size: int = 64, channels: int = 1, ham_limit: int | None = 2000,
                    volume_step: int = 4) -> ImageSet:
    """The unlabeled multi-modality collection (see module doc); ``split`` is all "train"."""
    from medvlp.data import load_dataset
    from medvlp.errors import ConfigError

    if channels not in (1, 3):
        raise ConfigError(f"collection: channels={channels}; expected 1 or 3")
    sources = list(DEFAULT_SOURCES if sources is None else sources)
    if not sources:
        raise ConfigError("collection: sources is empty; name at least one data set, CSV manifest or folder")
    parts: list[tuple[str, str, np.ndarray, str]] = []   # (source, modality, images, provenance)
    for name in sources:
        if name == "totalseg_volumes":
            imgs, prov = _volume_slices(root, volume_step)
            parts.append((name, "ct", _unify(imgs, size, channels), prov))
            continue
        kw = {"limit": ham_limit} if name == "ham10000" and ham_limit else {}
        data = load_dataset(name, root=root, **kw)
        if data.is_3d:
            raise ConfigError(f"collection: source {name!r} is 3D; slice volumes first (only 2D sources)")
        train = data.split_view("train")
        if len(train) == 0:
            raise ConfigError(f"collection: source {name!r} has no 'train' split images")
        parts.append((name, data.modality, _unify(train.images, size, channels), data.source))
    modalities = sorted({p[1] for p in parts})
    images = np.concatenate([p[2] for p in parts])
    labels = np.concatenate([np.full(len(p[2]), modalities.index(p[1]), dtype=np.int64) for p in parts])
    groups = np.concatenate([np.array([f"{p[0]}:{i}" for i in range(len(p[2]))]) for p in parts])
    counts = {p[0]: len(p[2]) for p in parts}
    return ImageSet(
        name="collection", images=images, labels=labels, task="multiclass", label_names=modalities,
        split=np.full(len(images), "train"), modality="mixed", groups=groups,
        source="; ".join(f"{p[0]}: {p[3]}" for p in parts),
        meta={"sources": counts, "modality_of_source": {p[0]: p[1] for p in parts},
              "modality_counts": {m: int((labels == k).sum()) for k, m in enumerate(modalities)},
              "only_train_splits": True, "size": size, "channels": channels})


def balanced_index(labels: np.ndarray, seed: int = 0, *, enabled: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, is_duplicate)``: every image once, plus duplicates of minority classes drawn
    (seeded, with replacement) until each class has as many entries as the largest one."""
    idx = np.arange(len(labels))
    if not enabled:
        return idx, np.zeros(len(idx), dtype=bool)
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    extra = [rng.choice(np.flatnonzero(labels == c), counts.max() - n, replace=True)
             for c, n in zip(classes, counts) if n < counts.max()]
    dup = np.concatenate(extra) if extra else np.zeros(0, dtype=np.int64)
    return np.concatenate([idx, dup]), np.concatenate([np.zeros(len(idx), bool), np.ones(len(dup), bool)])


class ViewAugment(TrainAugment):
    """One SSL view and its crop box: random-resized crop, flip, colour jitter, Gaussian blur.

    ``__call__(img)`` -> ``(tensor (C, S, S), box)``; ``box = (y0, x0, y1, x1)`` in [0, 1] of the
    input image, with x0 > x1 when the view is flipped. Randomness from torch's global RNG only.
    """

    def __init__(self, img_size: int, in_chans: int, mean, std, *, scale=(0.3, 1.0), hflip: bool = True,
                 jitter: float = 0.4, jitter_p: float = 0.8, blur_p: float = 0.5):
        super().__init__(img_size, in_chans, mean, std, scale=scale, hflip=hflip)
        self.jitter, self.jitter_p, self.blur_p = float(jitter), float(jitter_p), float(blur_p)

    def view(self, img: np.ndarray, region: tuple[float, float, float, float] = (0, 0, 1, 1)):
        x = self.to_tensor(img)
        hh, ww = x.shape[-2:]
        ry0, rx0, ry1, rx1 = region
        top0, left0 = int(round(ry0 * hh)), int(round(rx0 * ww))
        rh, rw = max(1, int(round((ry1 - ry0) * hh))), max(1, int(round((rx1 - rx0) * ww)))
        top, left, h, w = self._crop_box(rh, rw)
        top, left = top + top0, left + left0
        x = self.resize(x[:, top:top + h, left:left + w])
        box = [top / hh, left / ww, (top + h) / hh, (left + w) / ww]
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(-1)
            box = [box[0], box[3], box[2], box[1]]
        if self.jitter > 0 and torch.rand(()) < self.jitter_p:
            b = 1 + (torch.rand(()) * 2 - 1) * self.jitter
            c = 1 + (torch.rand(()) * 2 - 1) * self.jitter
            mean = x.mean()
            x = ((x - mean) * c + mean) * b
            if x.shape[0] == 3:
                s = 1 + (torch.rand(()) * 2 - 1) * self.jitter / 2
                grey = (x * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, keepdim=True)
                x = grey + (x - grey) * s
            x = x.clamp(0, 1)
        if self.blur_p > 0 and torch.rand(()) < self.blur_p:
            x = _gaussian_blur(x, sigma=float(0.1 + torch.rand(()) * 0.9) * self.img_size / 28)
        return self.normalize(x), torch.tensor(box, dtype=torch.float32)


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(2 * sigma)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[0]
    y = F.pad(x[None], (radius, radius, radius, radius), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return y[0]


class TwoViewDataset(Dataset):
    """Items ``{"view1", "view2", "box1", "box2", "index", "modality"}`` over a balanced index."""

    def __init__(self, data: ImageSet, augment: ViewAugment, *, balance: bool = True, seed: int = 0):
        self.data, self.augment = data, augment
        labels = data.labels if data.task != "multilabel" else np.zeros(len(data), dtype=np.int64)
        self.index, self.duplicate = balanced_index(labels, seed, enabled=balance)
        rng = np.random.default_rng(seed + 1)
        # Fixed 85-95 % area pre-crops of the duplicates, chosen once so an epoch is reproducible.
        area = rng.uniform(0.85, 0.95, len(self.index))
        side = np.sqrt(area)
        y0, x0 = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
        self.regions = np.stack([y0, x0, y0 + side, x0 + side], 1)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        j = int(self.index[i])
        region = tuple(self.regions[i]) if self.duplicate[i] else (0.0, 0.0, 1.0, 1.0)
        img = self.data.images[j]
        v1, b1 = self.augment.view(img, region)
        v2, b2 = self.augment.view(img, region)
        label = self.data.labels[j]
        return {"view1": v1, "view2": v2, "box1": b1, "box2": b2, "index": j,
                "modality": int(label) if np.ndim(label) == 0 else 0}
