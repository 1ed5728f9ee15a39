"""Helpers for the models tests: small input sizes so every registry model stays cheap.

A uniquely named module (not conftest) so test files can import it in pytest's default
rootdir/prepend import mode without clashing with other test folders."""
from __future__ import annotations

import torch

from medvlp.models import get_model_config

HEAVY = {"vit_base_p16_224", "resnet50"}


def small_img_size(name: str) -> int:
    """The smallest sensible input for a test: 2x2 patches for a 224 px ViT, 32 px for CNNs."""
    cfg = get_model_config(name)
    if cfg["kind"] == "vit":
        patch = cfg["timm_kwargs"].get("patch_size", 16)
        return cfg["img_size"] if cfg["img_size"] <= 64 else 2 * patch
    return 32 if cfg["img_size"] > 64 else cfg["img_size"]


def batch_for(backbone, batch: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, backbone.in_chans, backbone.img_size, backbone.img_size, generator=g)
