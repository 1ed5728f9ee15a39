"""Training the offline report LM on a tiny corpus: tokenizer, run, folder, metadata, determinism."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.knowledge.compilers import compile_nih
from medvlp.knowledge.field_query import DEFAULT_PROMPT
from medvlp.knowledge.ums import render_target
from medvlp.models.causal_lm import REPORTLM_META, load_causal_lm
from medvlp.train.reportlm import (Corpus, ReportLMConfig, check_json, run_lm_train, train_report_lm,
                                   train_tokenizer)

LABELS = ["No Finding", "Cardiomegaly", "Effusion", "Cardiomegaly|Effusion", "Mass", "Nodule|Mass", "Edema"]
SENTENCES = ["The heart size is normal.", "The lungs are clear.", "No pleural effusion or pneumothorax.",
             "Mild cardiomegaly.", "There is a small left pleural effusion.", "No acute cardiopulmonary disease."]


def _corpus(n: int = 40, seed: int = 0) -> Corpus:
    rng = np.random.default_rng(seed)
    recs = [compile_nih(LABELS[i % len(LABELS)], record_id=str(i), view=["PA", "AP"][i % 2]) for i in range(n)]
    json_docs = [DEFAULT_PROMPT + render_target(r) for r in recs]
    text_docs = [" ".join(rng.choice(SENTENCES, size=3, replace=False)) for _ in range(n)]
    probes = [(DEFAULT_PROMPT, None)] * 2
    return Corpus(train={"text": text_docs, "json": json_docs}, val={"text": text_docs[:5], "json": json_docs[:5]},
                  probes=probes, files=[])


TINY = dict(vocab_size=320, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, block_size=64,
            batch_size=4, max_steps=20, warmup_steps=2, lr=1e-2, eval_every=6, val_blocks=4, greedy_samples=2,
            max_new_tokens=8, time_budget_s=None, bf16_autocast=False)


def test_tokenizer_is_json_aware_and_lossless():
    c = _corpus()
    tok = train_tokenizer(c.train["text"] + c.train["json"] + ['{"pleural_effusion": {"state": null}}'] * 40, 500)
    assert tok.pad_token == "<pad>" and tok.bos_token == "<bos>" and tok.eos_token == "<eos>"
    for text in c.train["json"][:3] + c.train["text"][:3] + ['odd \u00e9 text\n\n  {"a":1}']:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text  # byte-level: nothing lost, no <unk>
    # no automatic BOS/EOS (Qwen's convention; CausalLM.tokenize(add_eos=True) appends EOS)
    assert tok.eos_token_id not in tok("a b", add_special_tokens=True)["input_ids"]
    # snake_case keys never split at "_"; the null state value is one token in any context
    pre = [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str('{"pleural_effusion": {"state": null}}')]
    assert "pleural_effusion" in pre and "\u0120null" in pre
    assert "\u0120null" in tok.convert_ids_to_tokens(tok('{"state": null}')["input_ids"])
    core = tok('{"state": null}', add_special_tokens=False)["input_ids"][1:-1]  # state ": null
    assert len(core) == 3
    for ctx in ('{"edema": {"state": null}, "y": 1}', 'x {"state": null}}'):
        ids = tok(ctx, add_special_tokens=False)["input_ids"]
        assert any(ids[i:i + 3] == core for i in range(len(ids))), ctx


def test_check_json():
    good = '{"modality": "CXR", "findings": {"mass": {"state": null}, "edema": {"state": "absent"}}, "study_view": "PA"}'
    assert check_json(good) == {"json_valid": True, "schema_valid": True}
    assert check_json(good, ["mass", "edema"])["schema_valid"]
    assert not check_json(good, ["edema"])["schema_valid"]
    assert check_json(good.replace('"absent"', '"maybe"')) == {"json_valid": True, "schema_valid": False}
    assert check_json(good[:-1]) == {"json_valid": False, "schema_valid": False}


def test_train_writes_a_loadable_folder(tmp_path, no_network):
    meta = train_report_lm(tmp_path / "lm", corpus=_corpus(), **TINY)
    folder = tmp_path / "lm"
    for name in ("config.json", "model.safetensors", "tokenizer.json", REPORTLM_META):
        assert (folder / name).exists(), name
    saved = json.loads((folder / REPORTLM_META).read_text())
    assert saved["training_config"]["hidden_size"] == 32 and saved["steps"] == 20
    assert saved["stopped_by"] == "max_steps"
    assert set(saved["final_val_loss_by_source"]) == {"text", "json"}
    # it learnt something: final validation loss well below the uniform-guess loss ln(V)
    assert saved["final_val_loss"] < 0.8 * np.log(saved["vocab_size"])
    assert 0.0 <= saved["greedy_json"]["json_valid_rate"] <= 1.0 and saved["greedy_json"]["n"] == 2
    assert saved["greedy_json"]["by_kind"]["full"]["n"] == 2
    from safetensors import safe_open
    with safe_open(str(folder / "model.safetensors"), "pt") as f:
        assert all(f.get_tensor(k).dtype == torch.float16 for k in f.keys())
    lm = load_causal_lm(str(folder))
    assert lm.dtype == torch.float32 and lm.hidden_size == 32 and not any(p.requires_grad for p in lm.parameters())
    assert meta["size_bytes"] > 0


def test_same_seed_same_weights(tmp_path):
    cfg = dict(TINY, max_steps=4, eval_every=4, greedy_samples=0)
    train_report_lm(tmp_path / "a", corpus=_corpus(), **cfg)
    train_report_lm(tmp_path / "b", corpus=_corpus(), **cfg)
    train_report_lm(tmp_path / "c", corpus=_corpus(), **dict(cfg, seed=1))
    from safetensors.torch import load_file
    a, b, c = (load_file(str(tmp_path / x / "model.safetensors")) for x in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_bad_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown option"):
        run_lm_train(tmp_path, hidden=3)
    with pytest.raises(ConfigError, match="not divisible"):
        train_report_lm(tmp_path, corpus=_corpus(), **dict(TINY, hidden_size=30, num_heads=4))
    with pytest.raises(ConfigError, match="empty"):
        train_report_lm(tmp_path, corpus=Corpus(), **TINY)
    with pytest.raises(Exception):
        ReportLMConfig(nonsense=1)


@pytest.mark.slow
def test_real_corpus_has_every_source(shared_data):
    from medvlp.train.reportlm import build_corpus
    c = build_corpus(ReportLMConfig(nih_records=50, pneumoniamnist_records=20), shared_data)
    assert set(c.train) == {"iu_report_text", "iu_ums_json", "nih_ums_json", "pneumoniamnist_ums_json"}
    assert all(len(v) > 0 for v in c.train.values()) and all(len(v) > 0 for v in c.val.values())
    assert any(d.startswith(DEFAULT_PROMPT + "{") for d in c.train["nih_ums_json"])
    assert any("Findings to report:" in d for d in c.train["nih_ums_json"])
    assert any('"state": null' in d for d in c.train["iu_ums_json"])
    assert len(c.files) == 5 and c.probes
