"""TGH-MoE: identity at init, two-level routing, stages, load-balance bookkeeping."""
from __future__ import annotations

import pytest
import torch
from timm.layers import Mlp

from medvlp.errors import ConfigError
from medvlp.models.moe import TGHMoE


def _moe(expert="lora", **kw):
    torch.manual_seed(0)
    return TGHMoE(Mlp(16, 32), 16, 8, expert=expert, **kw)


@pytest.mark.parametrize("expert", ["lora", "ffn"])
def test_fresh_layer_returns_the_base_ffn(expert):
    moe = _moe(expert)
    x, p = torch.randn(2, 5, 16), torch.randn(2, 8)
    assert torch.allclose(moe(x, p), moe.base(x), atol=1e-6)
    moe.set_mode("shared")
    assert torch.allclose(moe(x, p), moe.base(x), atol=1e-6)


@pytest.mark.parametrize("expert", ["lora", "ffn"])
def test_output_is_ffn_plus_gated_experts(expert):
    moe = _moe(expert, num_groups=2, experts_per_group=3, top_k=2)
    for e in moe.experts:  # non-zero experts
        for prm in e.parameters():
            torch.nn.init.normal_(prm, std=0.3)
    x, p = torch.randn(2, 4, 16), torch.randn(2, 8)
    y = moe(x, p)
    pi = moe.group_probs(p)
    r = torch.softmax(moe.token_router(torch.cat([x, p[:, None].expand(2, 4, 8)], -1)).view(2, 4, 2, 3), -1)
    ref = moe.base(x).clone()
    for b in range(2):
        for t in range(4):
            for g in range(2):
                v, i = r[b, t, g].topk(2)
                v = v / v.sum()
                for w, e in zip(v.tolist(), i.tolist()):
                    ref[b, t] += pi[b, g] * w * moe.experts[g * 3 + e](x[b, t][None], moe.base)[0]
    assert torch.allclose(y, ref, atol=1e-5)


def test_task_gates_depend_on_the_prompt_only():
    moe = _moe()
    p = torch.randn(1, 8)
    moe(torch.randn(1, 3, 16), p)
    a = moe.last_group_probs.clone()
    moe(torch.randn(1, 7, 16) * 5, p)
    assert torch.allclose(a, moe.last_group_probs)


def test_router_learns_to_send_different_prompts_to_different_groups():
    moe = _moe(num_groups=2)
    prompts = torch.randn(2, 8)
    target = torch.tensor([0, 1])
    opt = torch.optim.Adam(moe.task_router.parameters(), lr=0.05)
    before = moe.group_probs(prompts).argmax(-1)
    for _ in range(50):
        loss = torch.nn.functional.nll_loss(moe.group_probs(prompts).log(), target)
        opt.zero_grad(), loss.backward(), opt.step()
    after = moe.group_probs(prompts)
    assert after.argmax(-1).tolist() == [0, 1], (before, after)
    assert after[0, 0] > 0.9 and after[1, 1] > 0.9


def test_untie_copies_the_shared_expert_and_aux_loss_is_set():
    moe = _moe(mode="shared")
    torch.nn.init.normal_(moe.shared.b1, std=0.1)
    moe.untie_from_shared()
    for e in moe.experts:
        assert torch.equal(e.b1, moe.shared.b1)
        assert e.b1.data_ptr() != moe.shared.b1.data_ptr()  # untied copies
    moe.set_mode("routed")
    x, p = torch.randn(2, 6, 16), torch.randn(2, 8)
    moe(x, p)
    assert moe.aux_loss.requires_grad and 0 < float(moe.aux_loss.detach()) <= 2.0  # E=2: at most E
    with pytest.raises(ConfigError):
        moe.set_mode("both")
    with pytest.raises(ConfigError):
        TGHMoE(Mlp(16, 32), 16, 8, experts_per_group=2, top_k=3)
