from __future__ import annotations

import math

import pytest
import torch

from medvlp.losses.cosine_logit_ce import cosine_logit_ce, cosine_logits


def _reference(f: torch.Tensor, t: torch.Tensor, y: torch.Tensor, scale: float) -> float:
    """Loop over images and classes, straight from the formula."""
    total = 0.0
    for b in range(f.shape[0]):
        fb = [float(v) for v in f[b]]
        nf = math.sqrt(sum(v * v for v in fb))
        z = []
        for c in range(t.shape[0]):
            tc = [float(v) for v in t[c]]
            nt = math.sqrt(sum(v * v for v in tc))
            z.append(scale * sum(a * b_ for a, b_ in zip(fb, tc)) / (nf * nt))
        m = max(z)
        lse = m + math.log(sum(math.exp(v - m) for v in z))
        total += lse - z[int(y[b])]
    return total / f.shape[0]


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_matches_loop_reference(scale):
    g = torch.Generator().manual_seed(0)
    f = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3  # unnormalised on purpose
    t = torch.randn(3, 5, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (7,), generator=g)
    assert cosine_logit_ce(f, t, y, logit_scale=scale).item() == pytest.approx(_reference(f, t, y, scale), rel=1e-9)


def test_logits_are_scaled_cosines_and_scale_invariant_inputs():
    g = torch.Generator().manual_seed(1)
    f, t = torch.randn(4, 6, generator=g), torch.randn(2, 6, generator=g)
    z = cosine_logits(f, t, 100.0)
    assert z.abs().max() <= 100.0 + 1e-4
    assert torch.allclose(z, cosine_logits(5 * f, 0.1 * t, 100.0), atol=1e-4)
    assert torch.allclose(z[1, 0], 100 * torch.nn.functional.cosine_similarity(f[1], t[0], dim=0), atol=1e-4)


def test_gradient_reaches_class_embeddings_and_shape_errors():
    t = torch.randn(2, 4, requires_grad=True)
    loss = cosine_logit_ce(torch.randn(3, 4), t, torch.tensor([0, 1, 1]))
    loss.backward()
    assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="labels shape"):
        cosine_logit_ce(torch.randn(3, 4), torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"\(B, D\) and \(C, D\)"):
        cosine_logits(torch.randn(3, 4), torch.randn(2, 5))
