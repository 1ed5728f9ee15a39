"""Small heads shared by every method: an MLP projector (SimCLR/BYOL/CLIP style) and a linear head."""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from medvlp.errors import ConfigError

Norm = Literal["bn", "bn_noaffine", "ln", "none"]
Act = Literal["relu", "gelu"]


def _norm(kind: Norm, dim: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm1d(dim)
    if kind == "bn_noaffine":
        return nn.BatchNorm1d(dim, affine=False)
    if kind == "ln":
        return nn.LayerNorm(dim)
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"MLPProjector: norm={kind!r}; expected one of bn, bn_noaffine, ln, none")


def _act(kind: Act) -> nn.Module:
    if kind == "relu":
        return nn.ReLU(inplace=True)
    if kind == "gelu":
        return nn.GELU()
    raise ConfigError(f"MLPProjector: act={kind!r}; expected relu or gelu")


class MLPProjector(nn.Module):
    """``num_layers`` linear layers; every hidden layer is Linear -> norm -> act -> dropout.

    ``y = W_L(... act(norm(W_1 x)) ...)``; the last layer is a plain Linear (no norm, no act) so
    the output is unconstrained, as in SimCLR's projection head. ``num_layers=1`` is one Linear
    ``in_dim -> out_dim``. Hidden Linear layers have no bias when followed by a BatchNorm (the BN
    shift makes it redundant).
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2,
                 norm: Norm = "bn", act: Act = "relu", dropout: float = 0.0):
        super().__init__()
        if num_layers < 1:
            raise ConfigError(f"MLPProjector: num_layers={num_layers}; expected >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"MLPProjector: dropout={dropout}; expected 0 <= dropout < 1")
        layers: list[nn.Module] = []
        dim = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(dim, hidden_dim, bias=not norm.startswith("bn")),
                       _norm(norm, hidden_dim), _act(act)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            dim = hidden_dim
        layers.append(nn.Linear(dim, out_dim))
        self.net = nn.Sequential(*layers)
        self.in_dim, self.out_dim = in_dim, out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LinearHead(nn.Module):
    """``y = W x + b``: logits for ``num_outputs`` classes (or one score) from pooled features."""

    def __init__(self, in_dim: int, num_outputs: int):
        super().__init__()
        self.fc = nn.Linear(in_dim, num_outputs)
        self.in_dim, self.num_outputs = in_dim, num_outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)
