"""Soft Dice + cross-entropy for semantic segmentation (the U-Net transfer protocol's loss)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, *, include_background: bool = False,
                   smooth: float = 1e-5, batch_dice: bool = False) -> torch.Tensor:
    r"""Soft Dice loss on softmax probabilities.

    With :math:`p_{bc}(x) = \mathrm{softmax}(z_b(x))_c` and one-hot targets :math:`g_{bc}(x)`:

    .. math::

        D_{bc} = \frac{2 \sum_x p_{bc}(x)\, g_{bc}(x) + s}{\sum_x p_{bc}(x) + \sum_x g_{bc}(x) + s},
        \qquad L = 1 - \frac{1}{|B|\,|C'|} \sum_{b}\sum_{c \in C'} D_{bc}

    :math:`C'` is every class, or the foreground classes 1..C-1 when ``include_background`` is
    False (the default: with lesions covering ~5 % of a BUSI image the background term would be
    ~1 and only dilute the signal). ``batch_dice=True`` sums over the batch before the ratio (one
    :math:`D_c` per class, nnU-Net's "batch Dice"), which is steadier for images where a class is
    absent: per-image, an absent class scores :math:`s/(\sum_x p + s)`, i.e. it pushes its
    probabilities to 0.

    Args:
        logits: ``(B, C, H, W)`` raw scores, ``C >= 2`` (binary segmentation = 2 classes).
        target: ``(B, H, W)`` integer class map in ``[0, C)``.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"soft_dice_loss: logits (B,C,H,W) and target (B,H,W) expected, got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    num_classes = logits.shape[1]
    if num_classes < 2:
        raise ValueError("soft_dice_loss needs C >= 2 classes (use 2 for binary masks)")
    probs = logits.float().softmax(dim=1)
    onehot = F.one_hot(target.long(), num_classes).permute(0, 3, 1, 2).to(probs.dtype)
    dims = (0, 2, 3) if batch_dice else (2, 3)
    inter = (probs * onehot).sum(dims)
    denom = probs.sum(dims) + onehot.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)  # (C,) or (B, C)
    if not include_background:
        dice = dice[..., 1:]
    return 1.0 - dice.mean()


class DiceCELoss(nn.Module):
    r""":math:`L = \lambda_{dice}\, L_{dice} + \lambda_{ce}\, \mathrm{CE}(z, g)`.

    The sum used by the segmentation transfer protocols the paper follows (G2D / MGCA train their
    U-Nets with Dice + cross-entropy); both weights default to 1. ``class_weights`` go to the
    cross-entropy term only.
    """

    def __init__(self, dice_weight: float = 1.0, ce_weight: float = 1.0, *,
                 include_background: bool = False, smooth: float = 1e-5, batch_dice: bool = False,
                 class_weights: torch.Tensor | None = None):
        super().__init__()
        if dice_weight < 0 or ce_weight < 0 or dice_weight + ce_weight == 0:
            raise ValueError(f"weights must be >= 0 and not both 0, got dice={dice_weight}, "
                             f"ce={ce_weight}")
        self.dice_weight, self.ce_weight = float(dice_weight), float(ce_weight)
        self.include_background, self.smooth, self.batch_dice = include_background, smooth, batch_dice
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.dice_weight:
            loss = loss + self.dice_weight * soft_dice_loss(
                logits, target, include_background=self.include_background, smooth=self.smooth,
                batch_dice=self.batch_dice)
        if self.ce_weight:
            loss = loss + self.ce_weight * F.cross_entropy(logits.float(), target.long(),
                                                           weight=self.class_weights)
        return loss
