"""Feature decorrelation (M-FLAG orthogonality) against a numpy loop reference, every switch."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp.losses.feature_decorrelation import (MFLAG_CODE, MFLAG_PAPER, feature_decorrelation,
                                                 rank_deficit)


def _reference(x: np.ndarray, *, center=False, standardize=False, l2_normalize=False, divisor=None,
               off_diag_weight=0.0051, scale=0.5, eps=1e-5) -> float:
    b, d = x.shape
    x = x.astype(np.float64).copy()
    for i in range(d):
        col = x[:, i]
        if center or standardize:
            col = col - col.mean()
        if standardize:
            col = col / np.sqrt((col ** 2).mean() + eps)
        if l2_normalize:
            col = col / np.sqrt((col ** 2).sum() + eps)
        x[:, i] = col
    n = divisor if divisor is not None else (1.0 if l2_normalize else b)
    on = off = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(x[k, i] * x[k, j] for k in range(b)) / n
            if i == j:
                on += (c - 1) ** 2
            else:
                off += c ** 2
    return scale * (on + off_diag_weight * off)


CASES = [
    dict(MFLAG_CODE, divisor=512),          # the authors' code: / B_cfg, not the actual batch
    dict(MFLAG_CODE),                       # / actual batch
    dict(MFLAG_PAPER),
    dict(MFLAG_CODE, center=True),
    dict(MFLAG_CODE, standardize=True, off_diag_weight=0.02),
    dict(center=True, l2_normalize=True, off_diag_weight=0.3, scale=2.0),
]


@pytest.mark.parametrize("kw", CASES)
def test_matches_loop_reference(kw):
    rng = np.random.default_rng(0)
    x = np.maximum(rng.normal(0.3, 1.0, size=(6, 5)), 0)  # post-ReLU, like pooled ResNet features
    got = feature_decorrelation(torch.tensor(x), **kw).item()
    assert got == pytest.approx(_reference(x, **kw), rel=1e-5)


def test_code_variant_is_unnormalised_and_uses_the_configured_divisor():
    x = torch.randn(8, 4)
    a = feature_decorrelation(x, **MFLAG_CODE, divisor=512)
    b = feature_decorrelation(x, **MFLAG_CODE)
    assert not torch.isclose(a, b)
    # scaling the features changes the un-normalised loss, not the L2-normalised one
    assert not torch.isclose(feature_decorrelation(3 * x, **MFLAG_CODE), b)
    assert torch.isclose(feature_decorrelation(3 * x, **MFLAG_PAPER), feature_decorrelation(x, **MFLAG_PAPER))


def test_zero_for_orthonormal_columns_and_rank_floor():
    q, _ = torch.linalg.qr(torch.randn(16, 16))
    x = q[:, :8] * 4.0  # columns orthogonal, each with mean square 1 over the batch of 16
    assert feature_decorrelation(x, **MFLAG_CODE).item() == pytest.approx(0.0, abs=1e-6)
    # D > B: C has rank <= B, the loss cannot reach zero (METHODS.md 5.5)
    wide = torch.randn(4, 16, requires_grad=True)
    opt = torch.optim.Adam([wide], lr=0.05)
    for _ in range(300):
        loss = feature_decorrelation(wide, off_diag_weight=1.0, scale=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() > 1.0
    assert rank_deficit(4, 16) == 12 and rank_deficit(64, 16) == 0


def test_bad_inputs():
    with pytest.raises(ValueError, match="expected \\(B, D\\)"):
        feature_decorrelation(torch.randn(3))
    with pytest.raises(ValueError, match="not both"):
        feature_decorrelation(torch.randn(3, 2), standardize=True, l2_normalize=True)
    with pytest.raises(ValueError, match="divisor"):
        feature_decorrelation(torch.randn(3, 2), divisor=0)
