"""Dice and IoU of hard (argmax) segmentation maps, per class and mean over the foreground.

Two aggregations, both reported:

- **per-image** (the headline): Dice / IoU of each class on each image, averaged over the images.
  An image where a class is absent from both the ground truth and the prediction has no defined
  score for that class and is left out of that class's mean (so an organ that is absent and
  correctly not predicted neither helps nor hurts); absent in the truth but predicted scores 0.
- **pooled**: true/false positives and false negatives summed over the whole split, then one
  Dice / IoU per class (what a single big image would score; dominated by large structures).

``mean_fg_*`` averages the foreground classes (1..C-1) whose score is defined.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def confusion_counts(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(N, C, 3)`` int64 counts of (tp, fp, fn) per image and class for (N, H, W) label maps."""
    pred, target = np.asarray(pred), np.asarray(target)
    if pred.shape != target.shape or pred.ndim != 3:
        raise ValueError(f"pred and target must both be (N, H, W); got {pred.shape}, {target.shape}")
    out = np.zeros((len(pred), num_classes, 3), dtype=np.int64)
    for c in range(num_classes):
        p, t = pred == c, target == c
        out[:, c, 0] = (p & t).sum(axis=(1, 2))
        out[:, c, 1] = (p & ~t).sum(axis=(1, 2))
        out[:, c, 2] = (~p & t).sum(axis=(1, 2))
    return out


def _ratios(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, fn = counts[..., 0].astype(np.float64), counts[..., 1], counts[..., 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(tp + fp + fn > 0, 2 * tp / (2 * tp + fp + fn), np.nan)
        iou = np.where(tp + fp + fn > 0, tp / (tp + fp + fn), np.nan)
    return dice, iou


def _nanmean(a: np.ndarray, axis=None):
    a = np.asarray(a, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        n = np.sum(~np.isnan(a), axis=axis)
        s = np.nansum(a, axis=axis)
        return np.where(n > 0, s / np.maximum(n, 1), np.nan)


def segmentation_metrics(pred: np.ndarray, target: np.ndarray,
                         class_names: Sequence[str]) -> dict[str, Any]:
    """Dice and IoU (per image and pooled) for hard label maps ``pred`` and ``target`` (N, H, W).

    Returns JSON-ready floats (NaN -> None): ``dice``, ``iou`` (mean foreground, per image),
    ``dice_per_class``, ``iou_per_class`` (dict name -> score, background included),
    ``pooled_dice``, ``pooled_iou`` (mean foreground), ``pooled_dice_per_class``, ``n_images``.
    """
    num_classes = len(class_names)
    if num_classes < 2:
        raise ValueError("class_names must list the background and at least one foreground class")
    counts = confusion_counts(pred, target, num_classes)
    dice_img, iou_img = _ratios(counts)          # (N, C)
    dice_c, iou_c = _nanmean(dice_img, 0), _nanmean(iou_img, 0)
    pooled_dice, pooled_iou = _ratios(counts.sum(0))

    def f(x) -> float | None:
        return None if np.isnan(x) else float(x)

    return {
        "dice": f(_nanmean(dice_c[1:])), "iou": f(_nanmean(iou_c[1:])),
        "dice_per_class": {n: f(v) for n, v in zip(class_names, dice_c)},
        "iou_per_class": {n: f(v) for n, v in zip(class_names, iou_c)},
        "pooled_dice": f(_nanmean(pooled_dice[1:])), "pooled_iou": f(_nanmean(pooled_iou[1:])),
        "pooled_dice_per_class": {n: f(v) for n, v in zip(class_names, pooled_dice)},
        "n_images": int(len(pred)),
    }
