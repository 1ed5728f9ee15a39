from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvlp.losses.dice import DiceCELoss, soft_dice_loss


def _reference_dice(logits: torch.Tensor, target: torch.Tensor, include_background: bool,
                    smooth: float, batch_dice: bool) -> float:
    """Pixel loops straight from the formula (softmax per pixel, one-hot by comparison)."""
    b, c, h, w = logits.shape
    lg = logits.double().numpy()
    tg = target.numpy()
    probs = np.zeros_like(lg)
    for i in range(b):
        for y in range(h):
            for x in range(w):
                e = [math.exp(lg[i, k, y, x]) for k in range(c)]
                for k in range(c):
                    probs[i, k, y, x] = e[k] / sum(e)
    classes = range(c) if include_background else range(1, c)
    scores = []
    groups = [list(range(b))] if batch_dice else [[i] for i in range(b)]
    for grp in groups:
        for k in classes:
            inter = ps = gs = 0.0
            for i in grp:
                for y in range(h):
                    for x in range(w):
                        g = 1.0 if tg[i, y, x] == k else 0.0
                        inter += probs[i, k, y, x] * g
                        ps += probs[i, k, y, x]
                        gs += g
            scores.append((2 * inter + smooth) / (ps + gs + smooth))
    return 1.0 - sum(scores) / len(scores)


@pytest.mark.parametrize("include_background", [False, True])
@pytest.mark.parametrize("batch_dice", [False, True])
def test_soft_dice_matches_loop_reference(include_background, batch_dice):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 5, 6, generator=g, dtype=torch.float64)
    target = torch.randint(0, 4, (3, 5, 6), generator=g)
    target[1][target[1] == 2] = 0  # class 2 absent from image 1: the smooth term matters there
    got = soft_dice_loss(logits, target, include_background=include_background, smooth=1e-2,
                         batch_dice=batch_dice)
    want = _reference_dice(logits, target, include_background, 1e-2, batch_dice)
    assert float(got) == pytest.approx(want, rel=1e-6, abs=1e-7)


def test_dice_ce_is_weighted_sum_and_perfect_prediction_scores_zero_dice():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 4, 4, generator=g)
    target = torch.randint(0, 3, (2, 4, 4), generator=g)
    loss = DiceCELoss(dice_weight=0.3, ce_weight=2.0)(logits, target)
    want = 0.3 * soft_dice_loss(logits, target) + 2.0 * F.cross_entropy(logits, target)
    assert float(loss) == pytest.approx(float(want), rel=1e-6)
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 50.0
    assert float(soft_dice_loss(perfect, target)) < 1e-4
    wrong = F.one_hot((target + 1) % 3, 3).permute(0, 3, 1, 2).float() * 50.0
    assert float(soft_dice_loss(wrong, target)) > 0.99


def test_gradient_flows_and_bad_shapes_raise():
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    target = torch.randint(0, 2, (2, 3, 3))
    DiceCELoss()(logits, target).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="target"):
        soft_dice_loss(logits, target[:, :2])
    with pytest.raises(ValueError, match="C >= 2"):
        soft_dice_loss(torch.randn(2, 1, 3, 3), torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError):
        DiceCELoss(dice_weight=0.0, ce_weight=0.0)
