"""A torch Dataset over an ImageSet: batches are dicts (``image``, ``label``, ``index``)."""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from medvlp.data.imageset import ImageSet


class TorchImageDataset(Dataset):
    """``ds[i] -> {"image": FloatTensor (C,H,W), "label": ..., "index": i}``.

    label: LongTensor scalar for binary/multiclass; FloatTensor (C,) with NaN = not known for
    multilabel (losses must mask NaN). ``index`` is the row in ``imageset``.
    """

    def __init__(self, imageset: ImageSet, transform: Callable[[np.ndarray], torch.Tensor]):
        self.imageset = imageset
        self.transform = transform

    def __len__(self) -> int:
        return len(self.imageset)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.imageset
        if s.task == "multilabel":
            label = torch.from_numpy(np.asarray(s.labels[i], dtype=np.float32))
        else:
            label = torch.tensor(int(s.labels[i]), dtype=torch.long)
        return {"image": self.transform(s.images[i]), "label": label, "index": int(i)}
