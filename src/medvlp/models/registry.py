"""Model configs as data: one JSON per registered model in ``medvlp/models/configs/``.

A config says which timm architecture to build and how (``timm_name`` + ``timm_kwargs``), the
input it expects (``img_size``, ``in_chans``, ``mean``, ``std``) and where pretrained weights come
from (``pretrained_tag`` on the timm hub, or ``bundled_weights`` shipped in a Python package).
The JSON folder is read lazily on first use; users add their own with ``register_model``.
"""
from __future__ import annotations

import difflib
import fnmatch
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from medvlp.config import StrictConfig
from medvlp.errors import ConfigError, DataError

CONFIG_DIR = Path(__file__).parent / "configs"


class ModelConfig(StrictConfig):
    """The schema of one registered model (one JSON file)."""

    name: str
    kind: Literal["vit", "cnn"]
    timm_name: str
    timm_kwargs: dict[str, Any] = Field(default_factory=dict)
    img_size: int = Field(gt=0)
    in_chans: int = Field(gt=0)
    mean: list[float]
    std: list[float]
    global_pool: Literal["token", "avg"] = "avg"
    pretrained_tag: str | None = None
    # What ``pretrained=None`` means: None = random init, "imagenet" = the model's ImageNet weights.
    default_pretrained: Literal["imagenet", "timm"] | None = None
    # Name of an offline weights loader in ``medvlp.models.factory.BUNDLED_WEIGHTS``.
    bundled_weights: str | None = None
    notes: str = ""

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        if len(self.mean) not in (1, self.in_chans) or len(self.std) != len(self.mean):
            raise ValueError(f"mean/std need 1 or in_chans={self.in_chans} values, got "
                             f"{len(self.mean)}/{len(self.std)}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be > 0")
        if self.kind == "vit" and self.img_size % int(self.timm_kwargs.get("patch_size", 16)):
            raise ValueError(f"img_size={self.img_size} is not a multiple of patch_size="
                             f"{self.timm_kwargs.get('patch_size', 16)}")
        if self.kind == "cnn" and self.global_pool != "avg":
            raise ValueError("a CNN pools with global_pool='avg'")
        return self


_REGISTRY: dict[str, dict[str, Any]] = {}
_BUILTINS_LOADED = False


def _validate(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a model config must be a JSON object / dict")
    try:
        return ModelConfig.model_validate(data).model_dump()
    except ValidationError as e:
        raise ConfigError(f"{source}: invalid model config:\n{e}") from e


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"not a readable JSON file ({e})", "a model config JSON") from e
    return _validate(data, str(path))


def _ensure_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    for path in sorted(CONFIG_DIR.glob("*.json")):
        cfg = _read_json(path)
        if cfg["name"] != path.stem:
            raise ConfigError(f"{path}: name {cfg['name']!r} must match the file name")
        # A user registration made before the first lookup wins over the built-in one.
        _REGISTRY.setdefault(cfg["name"], cfg)
    _BUILTINS_LOADED = True


def register_model(config: dict[str, Any] | str | Path, *, overwrite: bool = False) -> str:
    """Register a model config given as a dict or a JSON file path; returns its name.

    Raises ``ConfigError`` if the config is invalid or the name is taken (unless ``overwrite``).
    """
    _ensure_builtins()
    if isinstance(config, (str, Path)):
        cfg = _read_json(Path(config))
    else:
        cfg = _validate(config, f"model config {config.get('name', '<unnamed>')!r}"
                        if isinstance(config, dict) else "model config")
    if cfg["name"] in _REGISTRY and not overwrite:
        raise ConfigError(f"model {cfg['name']!r} is already registered (pass overwrite=True)")
    _REGISTRY[cfg["name"]] = cfg
    return cfg["name"]


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by an fnmatch pattern such as ``"vit_*"``."""
    _ensure_builtins()
    names = sorted(_REGISTRY)
    return names if pattern is None else [n for n in names if fnmatch.fnmatch(n, pattern)]


def get_model_config(name: str) -> dict[str, Any]:
    """A copy of the registered config; an unknown name raises ``ConfigError`` with close names."""
    _ensure_builtins()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, _REGISTRY, n=5, cutoff=0.4)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (registered: {', '.join(sorted(_REGISTRY))})")
    return json.loads(json.dumps(_REGISTRY[name]))  # deep copy: callers may edit theirs freely
