from __future__ import annotations

import math

import pytest
import torch

from medvlp.losses import masked_bce_with_logits


def _reference(logits: torch.Tensor, targets: torch.Tensor, pos_weight=None) -> float:
    """Loop over the labelled entries, straight from the formula."""
    total, count = 0.0, 0
    for i in range(targets.shape[0]):
        for c in range(targets.shape[1]):
            y = float(targets[i, c])
            if math.isnan(y):
                continue
            x = float(logits[i, c])
            w = 1.0 if pos_weight is None else float(pos_weight[c])
            p = 1.0 / (1.0 + math.exp(-x))
            total += -(w * y * math.log(p) + (1 - y) * math.log(1 - p))
            count += 1
    return total / max(count, 1)


def test_matches_reference_with_missing_labels_and_pos_weight():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    targets = (torch.rand(6, 4, generator=g) > 0.5).double()
    targets[torch.rand(6, 4, generator=g) < 0.3] = float("nan")
    assert torch.isnan(targets).any() and (~torch.isnan(targets)).any()
    pos_weight = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    assert masked_bce_with_logits(logits, targets).item() == pytest.approx(_reference(logits, targets))
    assert masked_bce_with_logits(logits, targets, pos_weight).item() == pytest.approx(
        _reference(logits, targets, pos_weight))


def test_missing_labels_get_no_gradient_and_all_missing_is_zero():
    logits = torch.randn(3, 2, requires_grad=True)
    targets = torch.tensor([[1.0, float("nan")], [0.0, float("nan")], [float("nan"), 1.0]])
    masked_bce_with_logits(logits, targets).backward()
    assert torch.all(logits.grad[torch.isnan(targets)] == 0)
    assert torch.all(logits.grad[~torch.isnan(targets)] != 0)
    empty = masked_bce_with_logits(logits, torch.full((3, 2), float("nan")))
    assert empty.item() == 0.0 and empty.requires_grad


def test_extreme_logit_on_missing_label_does_not_leak():
    logits = torch.tensor([[1e4, 0.0]])
    targets = torch.tensor([[float("nan"), 1.0]])
    assert masked_bce_with_logits(logits, targets).item() == pytest.approx(math.log(2))


def test_shape_mismatch_raises():
    with pytest.raises(ValueError, match=r"logits shape \(2, 3\) != targets shape \(2, 2\)"):
        masked_bce_with_logits(torch.zeros(2, 3), torch.zeros(2, 2))
