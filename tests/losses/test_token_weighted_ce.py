import math

import numpy as np
import pytest
import torch

from medvlp.losses.token_weighted_ce import token_weighted_ce


def _reference(logits, labels, weights):
    b, length, _ = logits.shape
    total, count = 0.0, 0
    for i in range(b):
        for t in range(length - 1):
            y = labels[i, t + 1]
            if y == -100:
                continue
            row = logits[i, t].astype(np.float64)
            logp = row - np.log(np.exp(row - row.max()).sum()) - row.max()
            total += weights[i, t + 1] * -logp[y]
            count += 1
    return total / count


def test_matches_loop_reference_and_denominator_is_supervised_count():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.randint(0, 11, (2, 7))
    labels[0, :3] = -100
    labels[1, 5:] = -100
    weights = torch.rand(2, 7)
    got = token_weighted_ce(logits, labels, weights).item()
    assert math.isclose(got, _reference(logits.numpy(), labels.numpy(), weights.numpy()), rel_tol=1e-5)
    # weight 0 everywhere: the loss is 0, not NaN (denominator is the token count, not sum(w))
    assert token_weighted_ce(logits, labels, torch.zeros(2, 7)).item() == 0.0


def test_unit_weights_equal_plain_ce():
    torch.manual_seed(1)
    logits = torch.randn(3, 5, 9)
    labels = torch.randint(0, 9, (3, 5))
    labels[:, :2] = -100
    plain = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 9), labels[:, 1:].reshape(-1),
                                              ignore_index=-100)
    assert torch.allclose(token_weighted_ce(logits, labels), plain, atol=1e-6)


def test_shape_errors():
    with pytest.raises(ValueError, match="weights"):
        token_weighted_ce(torch.randn(1, 4, 3), torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 3))
