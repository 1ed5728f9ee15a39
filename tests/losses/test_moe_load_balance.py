"""Switch load-balancing loss E * sum_e f_e P_e against a loop reference."""
from __future__ import annotations

import pytest
import torch

from medvlp.losses.moe_load_balance import moe_load_balance


def _reference(probs, idx, mask=None):
    t, e = probs.shape
    idx = idx[:, None] if idx.ndim == 1 else idx
    w = [1.0] * t if mask is None else [float(m) for m in mask]
    n = sum(w)
    total = 0.0
    for j in range(e):
        f = sum(w[i] * sum(1 for s in idx[i].tolist() if s == j) for i in range(t)) / (n * idx.shape[1])
        p = sum(w[i] * float(probs[i, j]) for i in range(t)) / n
        total += f * p
    return e * total


@pytest.mark.parametrize("k", [1, 2])
def test_matches_formula(k):
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(13, 4, generator=g), -1)
    idx = probs.topk(k, -1).indices
    assert float(moe_load_balance(probs, idx)) == pytest.approx(_reference(probs, idx), rel=1e-6)
    mask = torch.rand(13, generator=g) > 0.3
    assert float(moe_load_balance(probs, idx, mask)) == pytest.approx(_reference(probs, idx, mask), rel=1e-6)


def test_uniform_is_one_and_collapse_is_e():
    probs = torch.full((8, 4), 0.25)
    idx = torch.arange(8) % 4
    assert float(moe_load_balance(probs, idx)) == pytest.approx(1.0)
    collapsed = torch.tensor([[1.0, 0, 0, 0]]).repeat(8, 1)
    assert float(moe_load_balance(collapsed, torch.zeros(8, dtype=torch.long))) == pytest.approx(4.0)


def test_gradient_flows_through_probs_only():
    logits = torch.randn(6, 3, requires_grad=True)
    probs = torch.softmax(logits, -1)
    moe_load_balance(probs, probs.argmax(-1)).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    with pytest.raises(ValueError):
        moe_load_balance(torch.rand(4), torch.zeros(4, dtype=torch.long))
