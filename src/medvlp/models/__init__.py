"""medvlp.models: a registry of timm backbones behind one feature contract.

- ``create_model(name, pretrained=None, in_chans=..., img_size=...)`` -> ``Backbone``;
- ``list_models(pattern)``, ``get_model_config(name)``, ``register_model(dict_or_json)``;
- ``save_pretrained`` / ``from_pretrained`` (offline) / ``load_pretrained`` / ``load_timm``;
- ``heads``: ``MLPProjector``, ``LinearHead`` shared by the methods.
"""
from __future__ import annotations

from medvlp.models.backbone import Backbone
from medvlp.models.factory import PretrainedUnavailableError, create_model
from medvlp.models.heads import LinearHead, MLPProjector
from medvlp.models.hub import from_pretrained, load_pretrained, load_timm, save_pretrained
from medvlp.models.registry import get_model_config, list_models, register_model

__all__ = [
    "Backbone", "create_model", "list_models", "register_model", "get_model_config",
    "save_pretrained", "from_pretrained", "load_pretrained", "load_timm", "MLPProjector",
    "LinearHead", "PretrainedUnavailableError",
]
