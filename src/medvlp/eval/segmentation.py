"""Segmentation transfer: a U-Net-style decoder on a backbone's multi-scale features.

The protocol the M-FLAG paper cites (G2D / MGCA, after ConVIRT): a U-Net whose encoder is the
pretrained image backbone, trained with Dice + cross-entropy on 1 / 10 / 100 % of the train masks,
encoder frozen (default) or fine-tuned; scored by Dice on the test split at the epoch with the
best validation Dice. Test masks play no part in any choice.

- **Encoder features**: timm's ``forward_intermediates`` through ``backbone.model``. A CNN gives
  its stage outputs (strides 2..32); a ViT gives ``vit_levels`` evenly spaced blocks as NCHW maps
  at the patch stride, resampled into a pyramid (deepest kept at stride p, the next ones upsampled
  2x, 4x, ... — the "simple feature pyramid" of UNETR / ViTDet) so the same decoder serves both.
- **Decoder** (segmentation_models_pytorch's U-Net decoder, re-written small): from the deepest
  map, repeatedly upsample to the next skip's size, concatenate it, two 3x3 conv-BN-ReLU; a last
  block at the input resolution without skip; a 3x3 conv to class logits. No raw-image skip: the
  frozen-encoder score must come from the encoder's features.
- **Inputs**: images via the backbone's :class:`Preprocess` (channels, mean/std) at ``img_size``
  (default the backbone's); masks resized with nearest neighbour to the same size; metrics at that
  size. No augmentation, so differences between encoders come from their weights.
- **Frozen encoder**: its features are computed once and cached (up to ``feature_cache_mb``), so
  a decoder trains at the cost of the decoder alone; beyond the cap they are recomputed per batch.
- **Epochs**: an epoch is one pass over the labelled subset but at least ``min_steps_per_epoch``
  optimiser steps, so the 1 % arm (a handful of images) is not starved of optimisation; it sees the
  same images again, never more of them.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvlp.data.imageset import ImageSet
from medvlp.data.io import resize_image
from medvlp.data.splits import label_fraction
from medvlp.data.transforms import Preprocess
from medvlp.errors import ConfigError, DataError
from medvlp.eval.seg_metrics import segmentation_metrics
from medvlp.losses.dice import DiceCELoss
from medvlp.utils import stable_hash

FRACTIONS = (0.01, 0.1, 1.0)


class MultiScaleEncoder(nn.Module):
    """``backbone.model`` -> list of NCHW maps, shallow (high resolution) first."""

    def __init__(self, backbone, vit_levels: int = 4):
        super().__init__()
        self.model = backbone.model
        self.kind = backbone.kind
        self.indices: int | list[int] | None = None
        self.patch = 1
        if self.kind == "vit":
            self.patch = int(self.model.patch_embed.patch_size[0])
            depth = len(self.model.blocks)
            if not 1 <= vit_levels <= depth:
                raise ConfigError(f"vit_levels must be in [1, {depth}], got {vit_levels}")
            self.indices = [round((i + 1) * depth / vit_levels) - 1 for i in range(vit_levels)]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        kw = {} if self.indices is None else {"indices": self.indices}
        return list(self.model.forward_intermediates(x, intermediates_only=True,
                                                     output_fmt="NCHW", **kw))

    def pyramid(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """ViT maps (all at the patch stride p) -> strides max(p/2^(k-1), 1), ..., p/2, p; CNN maps
        as they are. Kept out of ``forward`` so a frozen encoder's cache holds the small maps."""
        if self.kind != "vit":
            return feats
        k = len(feats)
        scales = [min(2 ** (k - 1 - i), self.patch) for i in range(k)]
        return [f if s == 1 else F.interpolate(f, scale_factor=s, mode="bilinear", align_corners=False)
                for f, s in zip(feats, scales)]


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """U-Net decoder over encoder maps ``[f_shallow, ..., f_deep]`` -> logits at ``out_size``."""

    def __init__(self, in_channels: Sequence[int], num_classes: int, width: int = 64):
        super().__init__()
        chans = list(in_channels)
        n = len(chans)
        widths = [max(16, width // 2 ** i) for i in range(n)]  # per decoder block, deep -> shallow
        blocks, cin = [], chans[-1]
        for i, skip in enumerate(reversed(chans[:-1])):
            blocks.append(nn.Sequential(_conv_bn_relu(cin + skip, widths[i]),
                                        _conv_bn_relu(widths[i], widths[i])))
            cin = widths[i]
        self.blocks = nn.ModuleList(blocks)
        self.final = nn.Sequential(_conv_bn_relu(cin, widths[-1]), _conv_bn_relu(widths[-1], widths[-1]))
        self.head = nn.Conv2d(widths[-1], num_classes, 3, padding=1)

    def forward(self, feats: Sequence[torch.Tensor], out_size: tuple[int, int]) -> torch.Tensor:
        x = feats[-1]
        for block, skip in zip(self.blocks, reversed(feats[:-1])):
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest")
            x = block(torch.cat([x, skip], dim=1))
        x = F.interpolate(x, size=out_size, mode="nearest")
        return self.head(self.final(x))


def mask_classes(data: ImageSet) -> list[str]:
    """Class names of ``data.masks``: ``meta["mask_classes"]`` or background/foreground."""
    names = data.meta.get("mask_classes")
    if names:
        return list(names)
    return ["background", "foreground"]


def prepare_arrays(data: ImageSet, preprocess: Preprocess) -> tuple[torch.Tensor, torch.Tensor]:
    """All images as a (N, C, S, S) float tensor and masks as (N, S, S) int64 (nearest resize)."""
    s = preprocess.img_size
    x = torch.stack([preprocess(img) for img in data.images])
    y = np.stack([resize_image(np.ascontiguousarray(m), s, nearest=True) for m in data.masks])
    return x, torch.from_numpy(y.astype(np.int64))


def _check(data: ImageSet, num_classes: int) -> None:
    if data.masks is None:
        raise DataError(data.source or data.name, "ImageSet has no masks", "a segmentation set")
    for split in ("train", "val", "test"):
        if not np.any(data.split == split):
            raise DataError(data.source or data.name, f"the {split} split is empty",
                            "train, val and test images")
    top = int(data.masks.max())
    if top >= num_classes:
        raise DataError(data.source or data.name, f"mask value {top} >= number of classes "
                        f"{num_classes} ({mask_classes(data)})", "masks in [0, C)")


def segmentation_transfer(backbone, data: ImageSet, *, fraction: float = 1.0,
                          freeze_encoder: bool = True, seed: int = 0, epochs: int = 20,
                          img_size: int | None = None, batch_size: int = 16, lr: float = 1e-3,
                          encoder_lr: float = 1e-4, weight_decay: float = 1e-4,
                          decoder_width: int = 64, min_steps_per_epoch: int = 10,
                          dice_weight: float = 1.0, ce_weight: float = 1.0,
                          include_background: bool = False, vit_levels: int = 4,
                          feature_cache_mb: float = 1024.0, device: str = "cpu",
                          prepared: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict[str, Any]:
    """Train a U-Net decoder on ``fraction`` of ``data``'s train masks; test Dice at the best-val epoch.

    ``prepared`` (optional) is ``prepare_arrays(data, preprocess)`` computed once by a caller that
    runs several fractions / seeds. The input ``backbone`` is never modified. Returns a
    JSON-ready dict: ``dice``, ``iou`` (test, mean foreground, per image), ``test`` and ``val``
    (full :func:`segmentation_metrics`), ``best_epoch``, ``val_history``, ``fraction``, ``seed``,
    ``n_train``, ``train_index_hash``, ``freeze_encoder``, ``img_size``, protocol settings.
    """
    t0 = time.time()
    classes = mask_classes(data)
    _check(data, len(classes))
    size = int(img_size or backbone.img_size)
    if backbone.kind == "vit" and size != backbone.img_size:
        raise ConfigError(f"a ViT built at img_size={backbone.img_size} cannot segment at {size} "
                          "(position embeddings are fixed); build it at that size")
    pp = dict(backbone.preprocess, img_size=size)
    preprocess = Preprocess.from_dict(pp)
    x_all, y_all = prepared if prepared is not None else prepare_arrays(data, preprocess)
    if x_all.shape[-1] != size or len(x_all) != len(data):
        raise ValueError(f"prepared arrays {tuple(x_all.shape)} do not match {len(data)} images at {size}")
    train_idx = label_fraction(data.labels, fraction, seed=seed,
                               pool_idx=np.flatnonzero(data.split == "train"))
    val_idx, test_idx = np.flatnonzero(data.split == "val"), np.flatnonzero(data.split == "test")

    dev = torch.device(device)
    torch.manual_seed(seed)
    encoder = MultiScaleEncoder(copy.deepcopy(backbone), vit_levels=vit_levels).to(dev)
    with torch.no_grad():
        native = encoder.eval()(x_all[:1].to(dev))
        probe = encoder.pyramid(native)
    decoder = UNetDecoder([f.shape[1] for f in probe], len(classes), decoder_width).to(dev)
    if freeze_encoder:
        encoder.requires_grad_(False)
    per_image = sum(f[0].numel() for f in native) * 4 / 2 ** 20
    cache: dict[int, list[torch.Tensor]] | None = None
    need = np.concatenate([train_idx, val_idx, test_idx])
    if freeze_encoder and per_image * len(need) <= feature_cache_mb:
        cache = _encode(encoder, x_all, need, dev)

    def features(idx: np.ndarray, train: bool) -> list[torch.Tensor]:
        if cache is not None:
            return encoder.pyramid([torch.stack([cache[int(i)][k] for i in idx]).to(dev)
                                    for k in range(len(native))])
        encoder.train(train and not freeze_encoder)
        with torch.set_grad_enabled(train and not freeze_encoder):
            return encoder.pyramid(encoder(x_all[idx].to(dev)))

    def predict(idx: np.ndarray) -> np.ndarray:
        decoder.eval()
        out = []
        with torch.no_grad():
            for s in range(0, len(idx), 64):
                b = idx[s:s + 64]
                out.append(decoder(features(b, False), (size, size)).argmax(1).cpu().numpy())
        return np.concatenate(out)

    loss_fn = DiceCELoss(dice_weight, ce_weight, include_background=include_background)
    groups = [{"params": decoder.parameters(), "lr": lr}]
    if not freeze_encoder:
        groups.append({"params": encoder.parameters(), "lr": encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=weight_decay)
    steps_per_epoch = max(math.ceil(len(train_idx) / batch_size), min_steps_per_epoch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"dice": -1.0, "epoch": None, "state": None, "val": None}
    y_val = y_all[val_idx].numpy()
    for epoch in range(1, epochs + 1):
        decoder.train()
        losses = []
        for _ in range(steps_per_epoch):
            if len(order) < min(batch_size, len(train_idx)):  # reshuffle when a pass is used up
                order += train_idx[torch.randperm(len(train_idx), generator=gen).numpy()].tolist()
            b, order = np.asarray(order[:batch_size]), order[batch_size:]
            logits = decoder(features(b, True), (size, size))
            loss = loss_fn(logits, y_all[b].to(dev))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
        val = segmentation_metrics(predict(val_idx), y_val, classes)
        val_dice = val["dice"] if val["dice"] is not None else 0.0
        history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val["dice"]})
        if val_dice > best["dice"]:  # strict: the earliest epoch wins a tie
            state = {"decoder": copy.deepcopy(decoder.state_dict())}
            if not freeze_encoder:
                state["encoder"] = copy.deepcopy(encoder.state_dict())
            best.update(dice=val_dice, epoch=epoch, state=state, val=val)
    decoder.load_state_dict(best["state"]["decoder"])
    if not freeze_encoder:
        encoder.load_state_dict(best["state"]["encoder"])
    test = segmentation_metrics(predict(test_idx), y_all[test_idx].numpy(), classes)
    return {
        "dice": test["dice"], "iou": test["iou"], "test": test, "val": best["val"],
        "best_epoch": best["epoch"], "val_history": history, "fraction": fraction, "seed": seed,
        "n_train": int(len(train_idx)), "n_val": int(len(val_idx)), "n_test": int(len(test_idx)),
        "train_index_hash": stable_hash(np.asarray(train_idx, dtype=np.int64)),
        "freeze_encoder": freeze_encoder, "img_size": size, "epochs": epochs,
        "steps_per_epoch": steps_per_epoch, "class_names": classes,
        "encoder": {"name": backbone.config.get("name"), "kind": backbone.kind,
                    "initial_weights": backbone.metadata.get("initial_weights"),
                    "pretrain_method": backbone.metadata.get("method"),
                    "feature_channels": [int(f.shape[1]) for f in probe],
                    "feature_sizes": [int(f.shape[-1]) for f in probe]},
        "decoder_params": int(sum(p.numel() for p in decoder.parameters())),
        "trainable_params": int(sum(p.numel() for m in (encoder, decoder) for p in m.parameters()
                                    if p.requires_grad)),
        "feature_cache": cache is not None,
        "loss": {"dice_weight": dice_weight, "ce_weight": ce_weight,
                 "include_background": include_background},
        "optim": {"lr": lr, "encoder_lr": None if freeze_encoder else encoder_lr,
                  "weight_decay": weight_decay, "batch_size": batch_size, "schedule": "cosine"},
        "seconds": round(time.time() - t0, 1),
    }


def _encode(encoder: MultiScaleEncoder, x_all: torch.Tensor, idx: np.ndarray,
            dev: torch.device) -> dict[int, list[torch.Tensor]]:
    encoder.eval()
    cache: dict[int, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for s in range(0, len(idx), 64):
            b = idx[s:s + 64]
            feats = [f.cpu() for f in encoder(x_all[b].to(dev))]
            for j, i in enumerate(b):
                cache[int(i)] = [f[j].clone() for f in feats]
    return cache


def run_segmentation_eval(model: str | Path, dataset: str | ImageSet,
                          fractions: Sequence[float] = FRACTIONS, *, seeds: Sequence[int] = (0,),
                          freeze_encoder: bool = True, img_size: int | None = None,
                          pretrained: str | bool | None = None, data_root: str | None = None,
                          dataset_kwargs: dict[str, Any] | None = None,
                          **transfer_kw: Any) -> dict[str, Any]:
    """Segmentation transfer of a saved model folder (or registry name) on a mask set.

    ``model``: a folder written by ``save_pretrained`` / ``medvlp pretrain``, or a registry name
    built with ``pretrained`` (None = the registry default). ``dataset``: a name known to
    :func:`medvlp.data.segmentation.load_segmentation` or a loaded ImageSet with masks. Returns
    ``{"model", "dataset", "results": [one segmentation_transfer dict per fraction x seed],
    "summary": {fraction: {"dice_mean", "dice_std", "iou_mean"}}}``.
    """
    from medvlp.data.segmentation import load_segmentation
    from medvlp.models import create_model, from_pretrained

    path = Path(model)
    if path.is_dir():
        backbone = from_pretrained(path)
        if img_size is not None and backbone.kind == "cnn":
            backbone.preprocess["img_size"] = int(img_size)
    else:
        backbone = create_model(str(model), pretrained=pretrained, img_size=img_size)
    data = dataset if isinstance(dataset, ImageSet) else load_segmentation(
        dataset, root=data_root, **(dataset_kwargs or {}))
    size = int(img_size or backbone.img_size)
    prepared = prepare_arrays(data, Preprocess.from_dict(dict(backbone.preprocess, img_size=size)))
    results = [segmentation_transfer(backbone, data, fraction=f, seed=s, freeze_encoder=freeze_encoder,
                                     img_size=size, prepared=prepared, **transfer_kw)
               for f in fractions for s in seeds]
    summary = {}
    for f in fractions:
        d = [r["dice"] for r in results if r["fraction"] == f and r["dice"] is not None]
        i = [r["iou"] for r in results if r["fraction"] == f and r["iou"] is not None]
        summary[str(f)] = {"dice_mean": float(np.mean(d)) if d else None,
                           "dice_std": float(np.std(d)) if d else None,
                           "iou_mean": float(np.mean(i)) if i else None, "n_seeds": len(d)}
    return {"model": str(model), "initial_weights": backbone.metadata.get("initial_weights"),
            "pretrain_method": backbone.metadata.get("method"),
            "parts_used": backbone.metadata.get("parts_used"),
            "dataset": data.name, "data": data.describe(), "freeze_encoder": freeze_encoder,
            "results": results, "summary": summary}
