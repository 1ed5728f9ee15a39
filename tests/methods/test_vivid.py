"""VIVID-Med mechanics: masking, padding, gradient flow through a frozen LM, saving, export."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp.data.imageset import ImageSet
from medvlp.knowledge.ums import build_record, render_target
from medvlp.methods.vivid import VIVIDMethod, VIVIDOptions
from medvlp.methods.vivid_targets import (VIVIDDataset, collate, encode_example, null_value_spans,
                                          records_for_imageset)
from medvlp.models import create_model
from medvlp.models.causal_lm import CausalLM, tiny_causal_lm


@pytest.fixture(scope="module")
def lm():
    return tiny_causal_lm(hidden_size=32, num_layers=2)


def _record():
    return build_record({"cardiomegaly": "present", "edema": None, "pneumonia": "absent",
                         "fracture": None, "atelectasis": "uncertain"}, modality="CXR", source="t",
                         study_view="PA")


@pytest.mark.parametrize("keep", [True, False])
def test_mask_weights_land_exactly_on_null_state_values(lm, keep):
    tok = lm.tokenizer
    rec = _record()
    target = render_target(rec)
    ex = encode_example(tok, "Report:\n", target, false_weight=0.0, keep_structural_tokens=keep)
    masked = (ex["weights"] == 0) & (ex["labels"] != -100)
    # the masked tokens, read back, are exactly the null values (or spans) of the 2 unanswerable fields
    chars = []
    start = None
    for j in range(len(ex["input_ids"])):
        if masked[j] and start is None:
            start = j
        if not masked[j] and start is not None:
            chars.append(tok.decode(ex["input_ids"][start:j].tolist()).strip())
            start = None
    if keep:
        assert chars == ["null", "null"]
    else:
        # The whole span is masked; a BPE token may merge its first quote with the preceding "{",
        # so the read-back may carry that punctuation too — but nothing else.
        assert len(chars) == 2
        for c in chars:
            assert '"state": null' in c
            assert set(c.replace('"state": null', "")) <= set('{ ,')
    nulls = [k for k, v in rec.findings.items() if v.state is None]
    assert len(nulls) == 2
    # and the non-null states keep weight 1
    assert float(ex["weights"][ex["labels"] != -100].sum()) == float(((ex["labels"] != -100) & ~masked).sum())


def test_masking_off_and_scope_all(lm):
    rec = build_record({"edema": None}, modality="CXR", source="t")  # study_view null too
    target = render_target(rec)
    assert len(null_value_spans(target)) == 1 and len(null_value_spans(target, scope="all")) == 2
    off = encode_example(lm.tokenizer, "p", target, answerability_mask=False)
    assert bool((off["weights"][off["labels"] != -100] == 1).all())


def test_right_padding_never_supervises_prompt_or_pad(lm):
    a = encode_example(lm.tokenizer, "A short prompt:\n", render_target(_record()))
    b = encode_example(lm.tokenizer, "A much, much longer prompt that differs:\n",
                       render_target(_record(), ["cardiomegaly"]))
    for ex in (a, b):
        ex["image"], ex["index"] = torch.zeros(1, 4, 4), 0
    batch = collate([a, b], pad_id=lm.tokenizer.pad_token_id)
    for i, ex in enumerate((a, b)):
        n_prompt = int((ex["labels"] == -100).sum())
        n = len(ex["input_ids"])
        assert bool((batch["labels"][i, :n_prompt] == -100).all())           # prompt: never supervised
        assert bool((batch["labels"][i, n_prompt:n] != -100).all())          # target + eos: supervised
        assert bool((batch["labels"][i, n:] == -100).all()) and bool((batch["weights"][i, n:] == 0).all())
        assert bool((batch["attention_mask"][i, :n] == 1).all()) and bool((batch["attention_mask"][i, n:] == 0).all())
        # the supervised ids are exactly the target ids (+ eos), whatever the other sample's length
        tgt = lm.tokenizer(render_target(_record()) if i == 0 else render_target(_record(), ["cardiomegaly"]),
                           add_special_tokens=False)["input_ids"] + [lm.tokenizer.eos_token_id]
        assert batch["labels"][i, n_prompt:n].tolist() == tgt


def _tiny_set(n=8):
    rng = np.random.default_rng(0)
    labels = (rng.random((n, 14)) < 0.2).astype(np.float32)
    from medvlp.data.nih import NIH_LABELS
    return ImageSet(name="nih1000", images=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), labels=labels,
                    task="multilabel", label_names=list(NIH_LABELS), split=np.array(["train"] * n),
                    modality="xray", meta={"view_position": np.array(["PA", "AP"] * (n // 2))})


def _batch(lm, opts, n=4):
    from medvlp.data.transforms import Preprocess
    ds = _tiny_set(n)
    bb = create_model("vit_tiny_p4_28")
    data = VIVIDDataset(ds, records_for_imageset(ds), Preprocess.from_dict(bb.preprocess), lm.tokenizer,
                        field_query=opts.field_query, k_range=(opts.k_min, opts.k_max))
    torch.manual_seed(0)
    return bb, collate([data[i] for i in range(n)], lm.tokenizer.pad_token_id)


@pytest.mark.parametrize("spd", [True, False])
def test_gradients_reach_vit_through_frozen_lm_and_lm_unchanged(lm, spd):
    opts = VIVIDOptions(spd=spd, k_min=2, k_max=3)
    bb, batch = _batch(lm, opts)
    method = VIVIDMethod(bb, lm, opts)
    before = {k: v.clone() for k, v in lm.state_dict().items()}
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    method.train()
    for _ in range(2):
        out = method(batch)
        opt.zero_grad()
        out["loss"].backward()
        vit_grads = [p.grad for p in bb.parameters()]
        assert all(g is not None for g in vit_grads) and sum(g.abs().sum() for g in vit_grads) > 0
        assert all(p.grad is None and not p.requires_grad for p in lm.parameters())
        opt.step()
    assert not lm.training and all(torch.equal(before[k], v) for k, v in lm.state_dict().items())
    assert ("ortho" in out) == spd and torch.isfinite(out["loss"])
    # the trainable state (what checkpoints hold) has no LM key
    from medvlp.methods.base import trainable_state_dict
    assert not any(k.startswith("lm.") for k in trainable_state_dict(method))


def test_ortho_weight_enters_loss(lm):
    opts0, opts1 = VIVIDOptions(lambda_ortho=0.0, k_min=2, k_max=2), VIVIDOptions(lambda_ortho=10.0, k_min=2, k_max=2)
    bb, batch = _batch(lm, opts0)
    m = VIVIDMethod(bb, lm, opts0).eval()
    torch.manual_seed(0)
    a = m(batch)
    m.opts = opts1
    b = m(batch)
    assert torch.allclose(b["loss"] - a["loss"], 10.0 * b["ortho"], atol=1e-5)


def test_runs_with_a_plain_hf_llama_from_tiny_config():
    """The same code with a HF causal LM built from a LlamaConfig and any fast tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM
    tok = tiny_causal_lm().tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=48, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, pad_token_id=tok.pad_token_id)
    lm = CausalLM(LlamaForCausalLM(cfg), tok, source="tiny LlamaConfig")
    opts = VIVIDOptions(groups=1, queries_per_group=8, lambda_ortho=0.0, k_min=2, k_max=2)  # Q-Former proxy
    bb, batch = _batch(lm, opts, n=2)
    out = VIVIDMethod(bb, lm, opts)(batch)
    out["loss"].backward()
    assert bb.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_offline_report_lm_runs_if_shipped():
    from medvlp.models.causal_lm import REPORTLM_FOLDER, load_causal_lm
    if not (REPORTLM_FOLDER / "config.json").exists():
        pytest.skip("offline report LM not built in this checkout")
    lm = load_causal_lm()
    opts = VIVIDOptions(k_min=2, k_max=2)
    bb, batch = _batch(lm, opts, n=2)
    out = VIVIDMethod(bb, lm, opts)(batch)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and bb.model.patch_embed.proj.weight.grad.abs().sum() > 0


def test_records_for_imagesets():
    ds = _tiny_set(4)
    recs = records_for_imageset(ds)
    assert recs[0].study_view == "PA" and recs[1].study_view == "AP"
    assert all(all(r.answerability.values()) for r in recs) and len(recs[0].findings) == 15
    pm = ImageSet(name="pneumoniamnist", images=np.zeros((2, 4, 4), np.uint8), labels=np.array([0, 1]),
                  task="binary", label_names=["normal", "pneumonia"], split=np.array(["train"] * 2))
    assert [r.findings["pneumonia"].state for r in records_for_imageset(pm)] == ["absent", "present"]
    user = ImageSet(name="my.csv", images=np.zeros((2, 4, 4), np.uint8),
                    labels=np.array([[1, np.nan], [0, -1]], np.float32), task="multilabel",
                    label_names=["Effusion", "Lung Mass"], split=np.array(["train"] * 2), modality="CXR")
    r = records_for_imageset(user)
    assert r[0].findings["lung_mass"].state is None and r[1].findings["lung_mass"].state == "uncertain"


def test_free_text_arm_uses_label_derived_report(lm):
    pytest.importorskip("medvlp.knowledge.report_text", reason="interface B (M-FLAG helper) not landed yet")
    ds = _tiny_set(2)
    from medvlp.data.transforms import Preprocess
    data = VIVIDDataset(ds, records_for_imageset(ds), Preprocess.from_dict(create_model("vit_tiny_p4_28").preprocess),
                        lm.tokenizer, target="free_text", max_text_length=4096)
    prompt, text = data.text_for(0, np.random.default_rng(0))
    assert "{" not in text and len(text) > 0
    ex = data[0]
    assert bool((ex["weights"][ex["labels"] != -100] == 1).all())  # no JSON, nothing to mask
