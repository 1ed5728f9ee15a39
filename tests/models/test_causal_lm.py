"""The frozen causal LM wrapper: freezing, gradient flow, padding, greedy generation, loading."""
from __future__ import annotations

import json

import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.models.causal_lm import (PAPER_CAUSAL_LM, REPORTLM_FOLDER, REPORTLM_META, CausalLM, load_causal_lm,
                                     tiny_causal_lm)


@pytest.fixture(scope="module")
def lm() -> CausalLM:
    return tiny_causal_lm(hidden_size=32, num_layers=2, seed=0)


def test_frozen_and_stays_in_eval(lm):
    assert not any(p.requires_grad for p in lm.parameters())
    parent = torch.nn.Sequential(lm)
    parent.train()
    assert not lm.training and not lm.model.training
    assert lm.tokenizer.pad_token is not None and lm.tokenizer.padding_side == "right"
    assert lm.hidden_size == 32


def test_gradients_reach_inputs_embeds_not_weights(lm):
    enc = lm.tokenize(['{"state": null}', "no acute disease"], add_eos=True)
    emb = lm.embed(enc["input_ids"]).detach().requires_grad_(True)
    logits = lm(emb, enc["attention_mask"])
    assert logits.shape == (*enc["input_ids"].shape, lm.vocab_size)
    logits.logsumexp(-1).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    assert all(p.grad is None for p in lm.parameters())


def test_right_padding_does_not_change_real_positions(lm):
    short, long = "pleural effusion", "the heart size is normal and the lungs are clear"
    alone = lm.tokenize([short])
    both = lm.tokenize([short, long])
    n = alone["input_ids"].shape[1]
    assert both["input_ids"].shape[1] > n and both["attention_mask"][0, n:].sum() == 0
    with torch.no_grad():
        a = lm(lm.embed(alone["input_ids"]), alone["attention_mask"])[0]
        b = lm(lm.embed(both["input_ids"]), both["attention_mask"])[0, :n]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_batched_generation_matches_one_by_one(lm):
    # Unequal prompt lengths are left-padded with explicit positions: each sample must decode as alone.
    g = torch.Generator().manual_seed(1)
    prefix = torch.randn(3, 4, lm.hidden_size, generator=g)
    prompts = ["Generate a structured medical report:\n", "x", "Findings to report: edema, mass.\n"]
    batched = lm.generate_from_prefix(prefix, prompts, max_new_tokens=6)
    single = [lm.generate_from_prefix(prefix[i:i + 1], [p], max_new_tokens=6)[0] for i, p in enumerate(prompts)]
    assert batched == single
    assert all(isinstance(t, str) for t in batched)


def test_generation_stops_at_eos(lm):
    tok = lm.tokenizer
    first = tok("a", add_special_tokens=False)["input_ids"][0]
    calls = {"n": 0}

    def steer(module, inputs, output):
        # step 0 -> token "a", every later step -> EOS: the text must be exactly "a".
        bias = torch.zeros(output.shape[-1])
        bias[first if calls["n"] == 0 else lm.eos_token_id] = 1e4
        calls["n"] += 1
        return output + bias

    handle = lm.model.lm_head.register_forward_hook(steer)
    try:
        out = lm.generate_from_prefix(None, ["hello"], max_new_tokens=20)
    finally:
        handle.remove()
    assert out == [tok.decode([first])]
    assert calls["n"] == 2  # stopped right after EOS instead of running 20 steps


def test_generate_rejects_mismatched_prefix(lm):
    with pytest.raises(ValueError, match="2 prefixes for 1 prompts"):
        lm.generate_from_prefix(torch.zeros(2, 1, lm.hidden_size), ["a"])


def test_pad_token_set_when_missing():
    base = tiny_causal_lm(hidden_size=16, num_layers=1)
    tok = base.tokenizer
    tok.pad_token = None
    tok.padding_side = "left"
    wrapped = CausalLM(base.model, tok, source="t")
    assert wrapped.tokenizer.pad_token == tok.eos_token and wrapped.tokenizer.padding_side == "right"


def test_folder_roundtrip_and_random_init_control(tmp_path, no_network):
    base = tiny_causal_lm(hidden_size=16, num_layers=1, seed=3)
    base.model.save_pretrained(tmp_path)
    base.tokenizer.save_pretrained(tmp_path)
    loaded = load_causal_lm(str(tmp_path))
    assert "local folder" in loaded.source and not any(p.requires_grad for p in loaded.parameters())
    for (k, v), (_, w) in zip(base.model.state_dict().items(), loaded.model.state_dict().items()):
        assert torch.equal(v, w), k
    rand = load_causal_lm(str(tmp_path), random_init=True, seed=5)
    assert "random init" in rand.source and rand.model.config.hidden_size == 16
    w0 = base.model.get_input_embeddings().weight
    assert not torch.allclose(w0, rand.model.get_input_embeddings().weight)
    assert not any(p.requires_grad for p in rand.parameters())


def test_unknown_name_is_a_config_error(no_network):
    with pytest.raises(ConfigError, match="no-such-org/no-such-lm"):
        load_causal_lm("no-such-org/no-such-lm")
    assert PAPER_CAUSAL_LM == "Qwen/Qwen2.5-1.5B-Instruct"


@pytest.mark.skipif(not (REPORTLM_FOLDER / "config.json").exists(), reason="report LM not built yet")
def test_shipped_report_lm_loads_offline(no_network):
    lm = load_causal_lm()
    meta = json.loads((REPORTLM_FOLDER / REPORTLM_META).read_text())
    assert lm.source.startswith(f"medvlp-reportlm v{meta['version']}") and "offline" in lm.source
    assert lm.dtype == torch.float32 and not any(p.requires_grad for p in lm.parameters())
    assert lm.hidden_size == meta["training_config"]["hidden_size"]
    assert len(lm.tokenizer) <= 3000
    size = sum(p.stat().st_size for p in REPORTLM_FOLDER.iterdir() if p.is_file())
    assert size <= 8.5e6, f"shipped report LM is {size / 1e6:.1f} MB"
    # The same tokenizer backs tiny_causal_lm, so test models and the real teacher share token ids.
    assert len(tiny_causal_lm().tokenizer) == len(lm.tokenizer)
    # JSON-aware tokenisation: the state value of an unanswerable field is one token, in any context.
    tok = lm.tokenizer
    null_id = tok(" null", add_special_tokens=False)["input_ids"]
    assert len(null_id) == 1
    for text in ('{"mass": {"state": null}}', '{"edema": {"state": null}, "mass": {"state": "absent"}}'):
        assert null_id[0] in tok(text, add_special_tokens=False)["input_ids"]
