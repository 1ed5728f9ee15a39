"""NT-Xent against a direct loop over the 2B anchors."""
from __future__ import annotations

import math

import pytest
import torch

from medvlp.losses.info_nce import nt_xent


def _reference(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> float:
    u = torch.cat([z1, z2]).double()
    u = u / u.norm(dim=1, keepdim=True)
    b = z1.shape[0]
    total = 0.0
    for k in range(2 * b):
        pos = k + b if k < b else k - b
        denom = sum(math.exp(float(u[k] @ u[m]) / tau) for m in range(2 * b) if m != k)
        total += -math.log(math.exp(float(u[k] @ u[pos]) / tau) / denom)
    return total / (2 * b)


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_nt_xent_matches_loop_reference(tau):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert float(nt_xent(z1, z2, tau)) == pytest.approx(_reference(z1, z2, tau), rel=1e-5)


def test_nt_xent_is_low_for_aligned_views_and_symmetric():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(8, 16, generator=g)
    aligned = nt_xent(z, z + 0.01 * torch.randn(8, 16, generator=g), 0.1)
    shuffled = nt_xent(z, z[torch.randperm(8, generator=g)], 0.1)
    assert aligned < 0.1 < shuffled
    z2 = torch.randn(8, 16, generator=g)
    assert float(nt_xent(z, z2)) == pytest.approx(float(nt_xent(z2, z)), rel=1e-6)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="must both be"):
        nt_xent(torch.randn(4, 3), torch.randn(5, 3))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.randn(4, 3), torch.randn(4, 3), temperature=0)
