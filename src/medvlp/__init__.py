"""medvlp: pretrain, adapt, evaluate and export medical imaging backbones using knowledge from
language models.

The public API is small and lazily imported so that ``import medvlp`` stays cheap::

    import medvlp
    model = medvlp.create_model("vit_tiny_p4_28", in_chans=1)
    ds = medvlp.load_dataset("pneumoniamnist")
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["create_model", "load_pretrained", "list_models", "load_dataset", "__version__"]


def __getattr__(name: str):
    if name in ("create_model", "load_pretrained", "list_models"):
        from medvlp import models

        return getattr(models, name)
    if name == "load_dataset":
        from medvlp.data import load_dataset

        return load_dataset
    raise AttributeError(f"module 'medvlp' has no attribute {name!r}")
