"""Shared fixtures for the engine tests: tiny datasets and methods that train in well under 1 s."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from medvlp.methods.base import Method


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread (and the 2-core CI box is shared with subprocesses)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RandomRecords(Dataset):
    """``{"x": (8,) float, "y": float, "index": int}`` records from a fixed generator."""

    def __init__(self, n: int = 64, dim: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, dim, generator=g)
        self.y = (self.x[:, 0] > 0).float()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"x": self.x[i], "y": self.y[i], "index": torch.tensor(i)}


class FrozenEncoderMethod(Method):
    """A frozen encoder (Linear + BatchNorm) under a trainable head (Linear + BatchNorm + dropout)."""

    def __init__(self, dim: int = 8, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16))
        self.head = nn.Sequential(nn.Linear(16, 16), nn.BatchNorm1d(16), nn.ReLU(),
                                  nn.Dropout(0.2), nn.Linear(16, 1))
        self.freeze(self.encoder)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logit = self.head(self.encoder(batch["x"]))[:, 0]
        loss = nn.functional.binary_cross_entropy_with_logits(logit, batch["y"])
        return {"loss": loss, "pos_rate": (logit > 0).float().mean()}
