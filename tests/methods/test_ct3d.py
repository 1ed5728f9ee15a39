"""ct3d method: answer-only CE, stages, router supervision, save/load, eval entry point."""
from __future__ import annotations

import numpy as np
import torch

from medvlp.data.ct_vqa import CTItem, CTVQASet
from medvlp.methods.base import trainable_state_dict
from medvlp.methods.ct3d import CTVQADataset, Collate, build_method, load_model, save_model
from medvlp.models import create_model

OPTS = dict(lm="tiny", tiny_lm_hidden=32, slices=4, depth=2, n_3d_blocks=1, n_visual_tokens=8,
            experts_per_group=2, lm_lora_rank=0, max_answer_tokens=40)


def _method(**kw):
    torch.manual_seed(0)
    return build_method(create_model("vit_tiny_p4_28", pretrained=False, depth=2), dict(OPTS, **kw))


def _data():
    rng = np.random.default_rng(0)
    vols = rng.random((3, 4, 28, 28)).astype(np.float32)
    items = [CTItem(0, "report", "Write a report.", "Normal adrenal gland.", "train", "t", "report"),
             CTItem(1, "closed", "Normal or not?", "B. normal", "train", "t", "dx", choices=["hyperplasia", "normal"],
                    letter="B", choice_text="normal"),
             CTItem(2, "open", "What is the diagnosis?", "hyperplasia", "train", "t", "dx")]
    return CTVQASet(vols, ["a", "b", "c"], np.array(["train"] * 3), items)


def _batch(m):
    data = _data()
    ds = CTVQADataset(data, data.items, m.opts.task_groups)
    return Collate(m.tokenizer)([ds[i] for i in range(3)])


def test_loss_counts_answer_tokens_only_and_lm_stays_frozen():
    m = _method()
    b = _batch(m)
    vis = m.visual_tokens(b["volume"], m.prompt_embedding(b["prompt_ids"], b["prompt_len"]))
    assert vis.shape[1] <= 8
    emb, mask, labels = m._sequence(vis, b["prompt_ids"], b["prompt_len"], b["answer_ids"], b["answer_len"])
    assert int((labels != -100).sum()) == int(b["answer_len"].sum())   # answer + eos tokens only
    assert mask.sum(1).tolist() == (vis.shape[1] + b["prompt_len"] + b["answer_len"]).tolist()
    assert (b["answer_ids"][torch.arange(3), b["answer_len"] - 1] == m.eos_id).all()
    m.train()
    out = m(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    assert m.connector.net[0].weight.grad is not None
    assert all(p.grad is None for p in m.lm.parameters())
    assert not any(k.startswith("lm.") for k in trainable_state_dict(m))


def test_two_stage_switch_unties_experts_from_the_shared_one():
    m = _method(stage1_steps=2)
    b = _batch(m)
    m.train()
    moe = next(iter(m.encoder.moe.values()))
    opt = torch.optim.SGD([p for p in m.parameters() if p.requires_grad], lr=0.5)
    for _ in range(2):
        out = m(b)
        assert float(out["stage"]) == 1 and "aux" not in out
        opt.zero_grad(), out["loss"].backward(), opt.step()
    assert moe.shared.b1.abs().sum() > 0  # the shared expert trained in stage 1
    out = m(b)
    assert float(out["stage"]) == 2 and "aux" in out and "router_ce" in out
    for e in moe.experts:
        assert torch.equal(e.b1, moe.shared.b1)


def test_prompts_of_different_tasks_are_routed_to_different_groups():
    m = _method(router_supervision=1.0)
    b = _batch(m)
    m.train()
    out = m(b)  # the method's router-supervision term is present and differentiable
    out["loss"].backward()
    assert "router_ce" in out and all(moe.task_router.weight.grad is not None for moe in m.encoder.moe.values())
    # level 1 sees only the prompt embedding (mean of the frozen LM's token embeddings): train it on
    # the task groups of the three prompts (report -> 0, closed/open VQA -> 1)
    pe = m.prompt_embedding(b["prompt_ids"], b["prompt_len"])
    params = [p for n, p in m.named_parameters() if "task_router" in n]
    opt = torch.optim.Adam(params, lr=0.1)
    for _ in range(200):
        loss = sum(torch.nn.functional.nll_loss(moe.group_probs(pe).log(), b["task_group"])
                   for moe in m.encoder.moe.values())
        opt.zero_grad(), loss.backward(), opt.step()
    for moe in m.encoder.moe.values():
        assert moe.group_probs(pe).argmax(-1).tolist() == [0, 1, 1]
    # the gates of a prompt do not depend on the volume: same prompt, other volumes, same groups
    for moe in m.encoder.moe.values():
        m.visual_tokens(torch.rand_like(b["volume"]), pe)
        assert moe.last_group_probs.argmax(-1).tolist() == [0, 1, 1]


def test_save_load_roundtrip_and_generation(tmp_path):
    m = _method(lm_lora_rank=2, stage1_steps=1)
    b = _batch(m)
    m.train()
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.05)
    for _ in range(3):
        out = m(b)
        opt.zero_grad(), out["loss"].backward(), opt.step()
    m.eval()
    prompts = [it.prompt() for it in _data().items]
    gen = m.generate(b["volume"], prompts, max_new_tokens=6)
    assert len(gen) == 3 and all(isinstance(g, str) for g in gen)
    save_model(m, tmp_path / "model")
    from safetensors.torch import load_file

    saved = load_file(str(tmp_path / "model" / "ct3d.safetensors"))
    lm_keys = [k for k in saved if k.startswith("lm.")]
    assert lm_keys and all("lora_" in k for k in lm_keys)  # LoRA only: the frozen LM is never saved
    assert any(k.startswith("encoder.moe.") for k in saved) and any(k.startswith("connector.") for k in saved)
    m2 = load_model(tmp_path / "model")
    assert m2.generate(b["volume"], prompts, max_new_tokens=6) == gen
    lp1 = m.answer_logprob(b["volume"], prompts, ["x", "y", "z"])
    assert torch.allclose(lp1, m2.answer_logprob(b["volume"], prompts, ["x", "y", "z"]), atol=1e-5)
    # generation is greedy decoding of the training format: the argmax continuation has the top log-prob
    first = m.generate(b["volume"][:1], prompts[:1], max_new_tokens=3)[0]
    if first:
        alt = "Q" if first[0] != "Q" else "R"
        lp = m.answer_logprob(b["volume"][:1], prompts[:1], [first[0]])
        assert lp.shape == (1,)
        assert m.answer_logprob(b["volume"][:1], prompts[:1], [alt]) != lp


def test_cli_eval_vqa_on_a_real_nifti_volume(tmp_path, shared_data):
    """`medvlp eval MODEL --task vqa --volume CT.nii.gz --question ...` end to end on real CT."""
    import json

    from typer.testing import CliRunner

    from medvlp.cli import app

    save_model(_method(), tmp_path / "model")
    volume = shared_data / "ct_volumes_totalsegmentator" / "example_ct_sm.nii.gz"
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "model"), "--task", "vqa", "--volume", str(volume),
                                   "--question", "Which organs are visible?", "--out", str(tmp_path / "ev")])
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert out["task"] == "vqa" and out["question"] == "Which organs are visible?"
    assert isinstance(out["answer"], str) and len(out["volume_shape"]) == 3
    assert "reconstructed" in out["note"]
