import math

import numpy as np
import torch

from medvlp.losses.attention_orthogonality import attention_entropy, attention_orthogonality


def _reference(attn: np.ndarray) -> float:
    a = attn.mean(axis=2)  # (B, G, N)
    b, g, _ = a.shape
    pair_means = []
    for i in range(g):
        for j in range(i + 1, g):
            vals = []
            for k in range(b):
                x, y = a[k, i], a[k, j]
                vals.append(abs(float(x @ y) / (np.linalg.norm(x) * np.linalg.norm(y))))
            pair_means.append(np.mean(vals))
    return float(np.mean(pair_means))


def test_matches_loop_reference():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(3, 4, 2, 17), dim=-1)
    got = attention_orthogonality(attn).item()
    assert math.isclose(got, _reference(attn.numpy()), rel_tol=1e-5)


def test_disjoint_groups_zero_identical_groups_one_single_group_zero():
    attn = torch.zeros(2, 2, 1, 4)
    attn[:, 0, 0, :2] = 0.5
    attn[:, 1, 0, 2:] = 0.5
    assert attention_orthogonality(attn).item() == 0.0
    same = torch.full((2, 3, 2, 5), 0.2)
    assert math.isclose(attention_orthogonality(same).item(), 1.0, rel_tol=1e-6)
    assert attention_orthogonality(torch.rand(2, 1, 8, 5)).item() == 0.0


def test_gradient_flows_and_entropy_bounds():
    logits = torch.randn(2, 3, 2, 6, requires_grad=True)
    attention_orthogonality(torch.softmax(logits, -1)).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    uniform = torch.full((1, 2, 1, 6), 1 / 6)
    assert torch.allclose(attention_entropy(uniform), torch.full((2,), math.log(6)), atol=1e-5)
    onehot = torch.zeros(1, 1, 1, 6)
    onehot[..., 3] = 1
    assert attention_entropy(onehot).item() < 1e-6
