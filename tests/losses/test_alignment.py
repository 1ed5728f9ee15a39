"""M-FLAG cosine alignment against a direct loop computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvlp.losses.alignment import cosine_alignment


def _reference(a: np.ndarray, b: np.ndarray) -> float:
    total = 0.0
    for i in range(len(a)):
        cos = float(a[i] @ b[i]) / (math.sqrt(float(a[i] @ a[i])) * math.sqrt(float(b[i] @ b[i])))
        total += 2 - 2 * cos
    return total / len(a)


def test_matches_loop_reference_once_and_doubled():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(7, 5, generator=g, dtype=torch.float64), torch.randn(7, 5, generator=g, dtype=torch.float64)
    ref = _reference(a.numpy(), b.numpy())
    assert cosine_alignment(a, b).item() == pytest.approx(ref, rel=1e-6)
    # the authors' code: (2 - 2cos(v, t)) + (2 - 2cos(t, v)) = twice the term
    swapped = _reference(b.numpy(), a.numpy())
    assert cosine_alignment(a, b, doubled=True).item() == pytest.approx(ref + swapped, rel=1e-6)


def test_extremes_and_scale_invariance():
    x = torch.randn(4, 3)
    assert cosine_alignment(x, 3.0 * x).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_alignment(x, -x).item() == pytest.approx(4.0, abs=1e-5)
    assert cosine_alignment(x, x, doubled=True).item() == pytest.approx(0.0, abs=1e-6)


def test_gradient_flows_to_both_sides_and_bad_shapes_fail():
    a, b = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    cosine_alignment(a, b).backward()
    assert a.grad.abs().sum() > 0 and b.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="must both be"):
        cosine_alignment(torch.randn(3, 4), torch.randn(3, 5))
