from __future__ import annotations

import pytest
import torch
from torch import nn

from medvlp.errors import ConfigError
from medvlp.models.heads import LinearHead, MLPProjector


@pytest.mark.parametrize("norm", ["bn", "bn_noaffine", "ln", "none"])
@pytest.mark.parametrize("act", ["relu", "gelu"])
def test_projector_shapes(norm, act):
    head = MLPProjector(16, 32, 8, num_layers=3, norm=norm, act=act, dropout=0.1)
    assert head(torch.randn(4, 16)).shape == (4, 8)
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(16, 32), (32, 32), (32, 8)]


def test_projector_structure():
    one = MLPProjector(16, 32, 8, num_layers=1)
    assert len(one.net) == 1 and isinstance(one.net[0], nn.Linear)
    bn = MLPProjector(16, 32, 8, norm="bn")
    assert bn.net[0].bias is None  # BN shift makes the bias redundant
    noaffine = MLPProjector(16, 32, 8, norm="bn_noaffine")
    assert noaffine.net[1].weight is None
    ln = MLPProjector(16, 32, 8, norm="ln")
    assert isinstance(ln.net[1], nn.LayerNorm) and ln.net[0].bias is not None


def test_projector_matches_manual_formula():
    torch.manual_seed(0)
    head = MLPProjector(5, 7, 3, norm="none", act="relu").eval()
    x = torch.randn(2, 5)
    l1, l2 = head.net[0], head.net[3]
    expected = l2(torch.relu(l1(x)))
    torch.testing.assert_close(head(x), expected, rtol=0, atol=0)


def test_projector_bad_args():
    with pytest.raises(ConfigError, match="norm='batch'"):
        MLPProjector(4, 4, 4, norm="batch")
    with pytest.raises(ConfigError, match="num_layers=0"):
        MLPProjector(4, 4, 4, num_layers=0)


def test_linear_head():
    head = LinearHead(12, 3)
    x = torch.randn(5, 12)
    torch.testing.assert_close(head(x), x @ head.fc.weight.T + head.fc.bias)
