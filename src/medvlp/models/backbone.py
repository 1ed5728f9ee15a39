"""The one feature contract every backbone honours, whatever timm architecture sits inside.

- ``forward_features(x)``: tokens ``(B, N, D)`` for a ViT (prefix tokens first), a feature map
  ``(B, D, H, W)`` for a CNN.
- ``pooled(x)``: ``(B, D)``; timm's own pooling, i.e. exactly
  ``model.forward_head(model.forward_features(x), pre_logits=True)`` of the plain timm model:
  CLS token (``global_pool="token"``) or mean of patch tokens followed by timm's ``fc_norm``
  (``global_pool="avg"``) for a ViT, global average pooling for a CNN.
- ``forward(x) == pooled(x)``.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Backbone(nn.Module):
    """A timm model behind medvlp's feature contract.

    ``config`` is the data needed to rebuild the exact architecture (registry name, timm name and
    kwargs); ``preprocess`` says how to prepare inputs (img_size, in_chans, mean, std);
    ``metadata`` records where the weights came from (e.g. ``{"initial_weights": "..."}``) and is
    written to ``metadata.json`` by ``save_pretrained``.
    """

    def __init__(self, model: nn.Module, config: dict[str, Any], preprocess: dict[str, Any],
                 metadata: dict[str, Any] | None = None):
        super().__init__()
        self.model = model
        self.config = dict(config)
        self.preprocess = dict(preprocess)
        self.metadata: dict[str, Any] = dict(metadata or {})
        self.kind: str = config["kind"]  # "vit" or "cnn"
        self.feature_dim: int = int(model.num_features)
        self.num_prefix_tokens: int = int(getattr(model, "num_prefix_tokens", 0))
        self.global_pool: str = config.get("global_pool", "token" if self.kind == "vit" else "avg")

    @property
    def img_size(self) -> int:
        return int(self.preprocess["img_size"])

    @property
    def in_chans(self) -> int:
        return int(self.preprocess["in_chans"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)

    def pool(self, feats: torch.Tensor) -> torch.Tensor:
        """Pool the output of ``forward_features`` to ``(B, D)``.

        Delegates to timm's ``forward_head(..., pre_logits=True)`` so that the pooled features are
        identical to those of the saved backbone loaded as a plain timm model (this includes the
        ViT ``fc_norm`` that timm applies after average pooling).
        """
        return self.model.forward_head(feats, pre_logits=True)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.forward_features(x))

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """ViT patch tokens without prefix tokens, or a CNN map flattened to ``(B, HW, D)``."""
        feats = self.forward_features(x)
        if self.kind == "vit":
            return feats[:, self.num_prefix_tokens:]
        return feats.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooled(x)
