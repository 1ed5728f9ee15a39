"""Save and load a backbone as a folder that needs neither the network nor medvlp to use.

A folder holds:

- ``config.json``: the registry config with complete ``timm_name`` + ``timm_kwargs``;
- ``model.safetensors``: the timm model's state dict, keys exactly as timm names them;
- ``preprocess.json``: ``img_size``, ``in_chans``, ``mean``, ``std``;
- ``metadata.json``: medvlp version, creation time, where the weights came from, and whatever the
  caller passes (method, data, metrics, parts used, ONNX parity record, ...).
"""
from __future__ import annotations

import json
import shutil
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvlp.errors import DataError
from medvlp.models.backbone import Backbone
from medvlp.models.registry import ModelConfig

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
PREPROCESS_FILE = "preprocess.json"
METADATA_FILE = "metadata.json"


def save_pretrained(backbone: Backbone, folder: str | Path,
                    metadata: dict[str, Any] | None = None) -> Path:
    """Write ``backbone`` to ``folder`` (replacing it) atomically; returns the folder path.

    Files are written to a temporary sibling folder which is then renamed, so a crash never leaves
    a half-written model where a complete one is expected.
    """
    import medvlp
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        # safetensors refuses views/shared storage: store plain contiguous CPU copies.
        tensors = {k: v.detach().to("cpu").contiguous().clone()
                   for k, v in backbone.model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        _write_json(tmp / CONFIG_FILE, backbone.config)
        _write_json(tmp / PREPROCESS_FILE, backbone.preprocess)
        meta = {"medvlp_version": medvlp.__version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "torch": torch.__version__, "timm": _timm_version(),
                **backbone.metadata, **(metadata or {})}
        _write_json(tmp / METADATA_FILE, meta)
        if folder.exists():
            old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
            folder.rename(old)
            tmp.rename(folder)
            shutil.rmtree(old)
        else:
            tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def from_pretrained(folder: str | Path, map_location: str | torch.device = "cpu", *,
                    in_chans: int | None = None) -> Backbone:
    """Load a folder written by ``save_pretrained``, in eval mode; never touches the network.

    The architecture is built with ``pretrained=False`` and the weights are loaded strictly.
    ``in_chans`` (optional) adapts the first conv with timm's ``adapt_input_conv``, e.g. to use a
    3-channel folder on grey images. A missing or corrupt file raises ``DataError`` naming it.
    """
    from medvlp.models.factory import build_with_weights, make_preprocess, resolve_config

    folder = Path(folder)
    cfg = _read_config(folder / CONFIG_FILE)
    preprocess = _read_json(folder / PREPROCESS_FILE, "a JSON object with img_size, in_chans, mean, std")
    metadata = _read_json(folder / METADATA_FILE, "a JSON object")
    state_dict = _read_safetensors(folder / WEIGHTS_FILE, map_location)
    if in_chans is not None and in_chans != cfg["in_chans"]:
        cfg = resolve_config(cfg, in_chans=in_chans)
        preprocess = make_preprocess(cfg)
    model = build_with_weights(cfg, state_dict, str(folder / WEIGHTS_FILE)).to(map_location)
    metadata.setdefault("loaded_from", str(folder))
    # eval like Hugging Face's from_pretrained: a loaded model is mostly used for features, and
    # train-mode BatchNorm would silently change them; trainers call .train() themselves.
    return Backbone(model, cfg, preprocess, metadata).eval()


def load_pretrained(name_or_folder: str | Path) -> Backbone:
    """A saved folder if ``name_or_folder`` is an existing directory, else the registry model with
    its ImageNet weights (``create_model(name, pretrained="imagenet")``: bundled offline weights
    when the config has them, timm's hub weights otherwise)."""
    from medvlp.models.factory import create_model

    if Path(name_or_folder).is_dir():
        return from_pretrained(name_or_folder)
    return create_model(str(name_or_folder), pretrained="imagenet")


def load_timm(folder: str | Path) -> nn.Module:
    """Load a saved folder as a plain timm model (no medvlp classes involved), in eval mode.

    This is all it does; a user without medvlp can write the same three lines::

        cfg = json.load(open(f"{folder}/config.json"))
        model = timm.create_model(cfg["timm_name"], pretrained=False, num_classes=0, **cfg["timm_kwargs"])
        model.load_state_dict(safetensors.torch.load_file(f"{folder}/model.safetensors"))

    Pooled features are then ``model.forward_head(model.forward_features(x), pre_logits=True)``
    (equal to ``model(x)`` since there is no classifier), on inputs prepared per preprocess.json.
    """
    import timm
    from safetensors.torch import load_file

    folder = Path(folder)
    cfg = json.loads((folder / CONFIG_FILE).read_text())
    model = timm.create_model(cfg["timm_name"], pretrained=False, num_classes=0, **cfg["timm_kwargs"])
    model.load_state_dict(load_file(str(folder / WEIGHTS_FILE)))
    return model.eval()


# ---------------------------------------------------------------------------------------------

def _timm_version() -> str:
    import timm

    return timm.__version__


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def _read_json(path: Path, expected: str) -> dict[str, Any]:
    if not path.is_file():
        raise DataError(path, "missing", f"{expected}, as written by medvlp save_pretrained")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, f"not valid JSON ({e})", expected) from e
    if not isinstance(data, dict):
        raise DataError(path, "not a JSON object", expected)
    return data


def _read_config(path: Path) -> dict[str, Any]:
    data = _read_json(path, "a medvlp model config")
    try:
        return ModelConfig.model_validate(data).model_dump()
    except Exception as e:  # pydantic ValidationError: name the file, not just the field
        raise DataError(path, f"invalid model config ({e})", "a medvlp model config") from e


def _read_safetensors(path: Path, map_location: str | torch.device) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise DataError(path, "missing", "the model weights as safetensors")
    try:
        return load_file(str(path), device=str(map_location))
    except Exception as e:  # safetensors raises SafetensorError / OSError on truncated files
        raise DataError(path, f"corrupt or unreadable safetensors file ({e})",
                        "the model weights as safetensors") from e
