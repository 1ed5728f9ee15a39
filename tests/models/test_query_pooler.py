import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.models.query_pooler import QueryGroupPooler
from medvlp.models.visual_prefix import VisualPrefix


def test_shapes_and_attention_rows_sum_to_one():
    torch.manual_seed(0)
    pooler = QueryGroupPooler(32, groups=4, queries_per_group=2, num_heads=4, dropout=0.0).eval()
    tokens = torch.randn(3, 17, 32)
    pooled, attn = pooler(tokens)
    assert pooled.shape == (3, 8, 32) and attn.shape == (3, 4, 2, 17)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 4, 2), atol=1e-5)
    # group g's output is its own MultiheadAttention over all tokens
    q = pooler.query_tokens[2].unsqueeze(0).expand(3, -1, -1)
    ref, _ = pooler.attn[2](q, tokens, tokens)
    assert torch.allclose(pooled[:, 4:6], ref, atol=1e-6)


def test_value_override_and_config_errors():
    pooler = QueryGroupPooler(8, groups=3, queries_per_group=1, num_heads=2, dropout=0.0)
    keys, values = torch.randn(2, 5, 8), torch.zeros(2, 5, 8)
    pooled, _ = pooler(keys, values)
    # zero values -> the output is the out-projection bias only
    assert torch.allclose(pooled[:, 0], pooler.attn[0].out_proj.bias.expand(2, 8), atol=1e-6)
    with pytest.raises(ConfigError):
        QueryGroupPooler(10, num_heads=4)
    with pytest.raises(ValueError, match="tokens of shape"):
        pooler(torch.randn(2, 5, 7))


@pytest.mark.parametrize("spd,extra", [(True, 8), (False, 4)])
def test_visual_prefix_variants(spd, extra):
    torch.manual_seed(0)
    vp = VisualPrefix(16, 24, spd=spd, groups=4, queries_per_group=2, num_heads=2)
    prefix, attn = vp(torch.randn(2, 10, 16))
    assert prefix.shape == (2, extra + 10, 24)
    assert (attn is not None) == spd
    vp.eval()
    a, _ = vp(torch.randn(2, 10, 16))
    b, _ = vp(torch.randn(2, 10, 16))
    # the no-SPD learned tokens do not depend on the image; SPD tokens do
    assert torch.equal(a[:, :extra], b[:, :extra]) == (not spd)
