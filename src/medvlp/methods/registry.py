"""Method registry: ``medvlp pretrain --method NAME`` looks the name up here.

Each method module exposes ``build(ctx: BuildContext) -> MethodBuild``: it wraps the backbone the
run created, builds the torch dataset its ``forward`` expects (tokenised UMS targets, report text,
two augmented views, ...) and names the pretrained parts it used, so the saved model says which
teacher or text encoder taught it. Built-in methods are listed by module path and imported only
when used (so ``supervised`` never imports transformers); :func:`register_method` adds others.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.data import Dataset

from medvlp.errors import ConfigError


@dataclass
class BuildContext:
    """What a pretraining run hands a method builder."""

    backbone: nn.Module            # medvlp Backbone created from the run's model config
    train_set: Any                 # medvlp.data.ImageSet: the pretraining images (train split)
    transform: Callable            # image (H, W[, C]) uint8/float -> (C, H, W) tensor, with augmentation
    options: dict[str, Any]        # the run's ``method.options``
    seed: int = 0
    data_root: str | None = None
    out_dir: Path | None = None


@dataclass
class MethodBuild:
    """A built method: the module the engine trains and the dataset (+ collate) that feeds it."""

    method: nn.Module
    dataset: Dataset
    collate_fn: Callable | None = None
    # Which pretrained parts taught this backbone, e.g. {"teacher": "medvlp-reportlm (offline)"}.
    parts_used: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Called with the saved model folder after the backbone is written, for trained parts beyond
    # the backbone that users need later (M-FLAG's projectors for a dual encoder, say).
    save_extra: Callable[[Path], None] | None = None


MethodBuilder = Callable[[BuildContext], MethodBuild]

_BUILTIN: dict[str, str] = {
    "supervised": "medvlp.methods.supervised",
    "vivid": "medvlp.methods.vivid",
    "ums_classifier": "medvlp.methods.ums_classifier",
    "mflag": "medvlp.methods.mflag",
    "lvmmed": "medvlp.methods.lvmmed",
    "simclr": "medvlp.methods.simclr",
    "ct3d": "medvlp.methods.ct3d",
}
_REGISTERED: dict[str, MethodBuilder] = {}


def register_method(name: str) -> Callable[[MethodBuilder], MethodBuilder]:
    """Decorator: make ``build`` available as ``--method name``."""
    def deco(fn: MethodBuilder) -> MethodBuilder:
        _REGISTERED[name] = fn
        return fn
    return deco


def list_methods() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def get_method_builder(name: str) -> MethodBuilder:
    if name in _REGISTERED:
        return _REGISTERED[name]
    if name not in _BUILTIN:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    module = importlib.import_module(_BUILTIN[name])
    build = getattr(module, "build", None)
    if build is None:
        raise ConfigError(f"method {name!r}: module {_BUILTIN[name]} has no build(ctx) function")
    return build
