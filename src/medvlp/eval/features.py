"""Frozen-feature extraction: a backbone's pooled features for every image of an ImageSet."""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader

from medvlp.data.imageset import SPLITS, ImageSet
from medvlp.errors import DataError
from medvlp.models.backbone import Backbone
from medvlp.utils import resolve_device

SplitData = tuple[np.ndarray, np.ndarray]


def extract_features(backbone: Backbone, imageset: ImageSet, *, batch_size: int = 256,
                     device: str = "auto", num_workers: int = 0) -> np.ndarray:
    """Pooled features ``(N, D)`` float32 in the order of ``imageset``.

    Images are prepared with ``Preprocess.from_dict(backbone.preprocess)`` (the same resizing and
    normalisation the backbone was trained with). The backbone runs in eval mode under
    ``torch.inference_mode``; its previous train/eval mode is restored afterwards.
    """
    from medvlp.data.torch_dataset import TorchImageDataset
    from medvlp.data.transforms import Preprocess

    dev = resolve_device(device)
    dataset = TorchImageDataset(imageset, Preprocess.from_dict(backbone.preprocess,
                                                               is_3d=imageset.is_3d))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    was_training = backbone.training
    backbone.eval()
    original_device = next(backbone.parameters()).device
    backbone.to(dev)
    out = np.empty((len(imageset), backbone.feature_dim), dtype=np.float32)
    try:
        with torch.inference_mode():
            for batch in loader:
                feats = backbone.pooled(batch["image"].to(dev, non_blocking=True))
                # Place rows by the dataset's own index so order can never silently drift.
                out[batch["index"].numpy()] = feats.float().cpu().numpy()
    finally:
        backbone.to(original_device)
        backbone.train(was_training)
    return out


def features_for_splits(backbone: Backbone, imageset: ImageSet, *, batch_size: int = 256,
                        device: str = "auto", num_workers: int = 0) -> dict[str, SplitData]:
    """``{split: (X, y)}`` for the splits present in ``imageset``, from one extraction pass."""
    feats = extract_features(backbone, imageset, batch_size=batch_size, device=device,
                             num_workers=num_workers)
    return split_arrays(feats, imageset)


def split_arrays(feats: np.ndarray, imageset: ImageSet) -> dict[str, SplitData]:
    """Slice row-aligned features ``(N, D)`` and the labels of ``imageset`` by split."""
    if len(feats) != len(imageset):
        raise ValueError(f"{imageset.name}: {len(feats)} feature rows for {len(imageset)} images")
    unknown = set(np.unique(imageset.split)) - set(SPLITS)
    if unknown:
        raise DataError(imageset.source or imageset.name,
                        f"unknown split names {sorted(map(str, unknown))}",
                        expected=f"only {', '.join(SPLITS)}")
    return {s: (feats[imageset.split == s], imageset.labels[imageset.split == s])
            for s in SPLITS if np.any(imageset.split == s)}
