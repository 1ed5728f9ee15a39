"""The frozen text encoder: offline MiniLM, any HF encoder config, freezing, pooling, gradients."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from medvlp.models.text import TextEncoder, load_text_encoder, minilm_folder


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_folder()))


def tiny_encoder(tokenizer, pooling="cls", seed=0) -> TextEncoder:
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=64, hidden_dropout_prob=0.5,
                     attention_probs_dropout_prob=0.5)
    return TextEncoder(BertModel(cfg), tokenizer, pooling=pooling, source="tiny")


def test_offline_minilm_loads_without_network(no_network):
    enc = load_text_encoder()  # HF_HUB_OFFLINE=1 and sockets refused by the fixture
    assert enc.dim == 384 and enc.pooling == "mean" and "offline" in enc.source
    e = enc.encode(["No pleural effusion.", "Large right pneumothorax."])
    assert e.shape == (2, 384) and torch.isfinite(e).all()
    # different texts, different embeddings; the same text twice, the same embedding
    assert not torch.allclose(e[0], e[1])
    # (alone vs. padded beside a longer text: equal up to float rounding of the padded attention)
    assert torch.allclose(enc.encode(["No pleural effusion."])[0], e[0], atol=1e-5)


def test_any_hf_encoder_config_builds_runs_and_loads_from_a_folder(tokenizer, tmp_path):
    enc = tiny_encoder(tokenizer)
    out = enc(["cardiomegaly is seen", "no effusion"])
    assert out.shape == (2, 32) and enc.dim == 32
    enc.model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    again = load_text_encoder(str(tmp_path), pooling="cls")
    assert "local folder" in again.source
    assert torch.allclose(again(["cardiomegaly is seen", "no effusion"]), out, atol=1e-5)


def test_frozen_no_grad_eval_under_parent_train_and_weights_unchanged_by_training(tokenizer):
    enc = tiny_encoder(tokenizer)
    assert not any(p.requires_grad for p in enc.parameters())
    parent = nn.ModuleDict({"text": enc, "head": nn.Linear(32, 1)})
    parent.train()
    assert not enc.training and not enc.model.training
    # dropout is 0.5 in this config: eval mode means two calls agree exactly
    texts = ["there is a small effusion"]
    assert torch.equal(enc(texts), enc(texts))
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    opt = torch.optim.AdamW([p for p in parent.parameters() if p.requires_grad], lr=0.1)
    for _ in range(3):
        loss = parent["head"](enc(texts)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in enc.state_dict().items())
    assert all(p.grad is None for p in enc.parameters())


def test_gradients_reach_inputs_embeds(tokenizer):
    enc = tiny_encoder(tokenizer)
    tok = enc.tokenize(["a b c", "pleural effusion"])
    emb = enc.token_embeddings(tok["input_ids"]).detach().requires_grad_(True)
    enc.encode_embeds(emb, tok["attention_mask"]).sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0
    # padded positions get no gradient under mean pooling? With CLS they get none through the mask
    pad = tok["attention_mask"] == 0
    if pad.any():
        assert emb.grad[pad].abs().sum() == 0


def test_empty_text_is_a_clear_error(tokenizer):
    enc = tiny_encoder(tokenizer)
    with pytest.raises(ValueError, match="text #1 is empty"):
        enc(["fine", "   "])
    with pytest.raises(ValueError, match="no texts"):
        enc([])


def test_cls_and_mean_pooling(tokenizer):
    enc = tiny_encoder(tokenizer, pooling="cls")
    tok = enc.tokenize(["short", "a much longer sentence here"])
    hidden = enc.model(**tok).last_hidden_state
    assert torch.equal(enc.pool(hidden, tok["attention_mask"]), hidden[:, 0])
    enc.pooling = "mean"
    m = tok["attention_mask"]
    ref = torch.stack([hidden[i, : int(m[i].sum())].mean(0) for i in range(2)])
    assert torch.allclose(enc.pool(hidden, m), ref, atol=1e-6)
    # padding does not change a mean-pooled embedding
    alone = enc(["short"])
    assert torch.allclose(alone[0], enc(["short", "a much longer sentence here"])[0], atol=1e-5)
    with pytest.raises(Exception, match="pooling"):
        TextEncoder(enc.model, tokenizer, pooling="max")


def test_unknown_encoder_name_is_a_config_error(tmp_path):
    from medvlp.errors import ConfigError

    with pytest.raises(ConfigError, match="could not be loaded"):
        load_text_encoder(str(tmp_path / "nope"))
