"""Bench suites ``ct3d`` / ``ct3d_quick``: the 3D CT MLLM (TGH-MoE reconstruction) on real labels.

Arms (same data, steps, LM and seed; only the named factor changes):

- ``moe_2stage_2d``: TGH-MoE, two-stage training, encoder transferred from a 2D checkpoint;
- ``no_moe_2d``: the same without MoE;
- ``moe_1stage_2d``: TGH-MoE trained routed from the first step (one stage);
- ``moe_2stage_random``: as the first, but the 3D encoder starts from random weights.

While the shipped report LM is missing, the LM is a tiny Llama trained here on the train split's
derived text only (no images) and then frozen (+ LoRA), standing in for a text-pretrained LM.
The 2D checkpoint is made here (a supervised ViT on PneumoniaMNIST's train split, a few hundred
steps; recorded) unless ``spec["init_2d"]`` names a medvlp 2D model folder. Rows: AdrenalMNIST3D
classification (AUC/ACC of the LM's answer log-likelihood "hyperplasia" vs "normal", and a
logistic-regression probe of the pooled volume features) next to MedMNIST v2's published
ResNet-50+3D row; closed-VQA accuracy (M3D letter rule), open-VQA and report BLEU/ROUGE. All
questions and reports are DERIVED from labels.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from medvlp.bench.common import md_table

_COMMON = {"encoder": "vit_tiny_p4_28", "lm": "tiny", "lm_lora_rank": 8, "tiny_lm_hidden": 64, "lm_text_steps": 200,
           "arms": ["moe_2stage_2d", "no_moe_2d", "moe_1stage_2d", "moe_2stage_random"], "seed": 0}
SUITES: dict[str, dict[str, Any]] = {
    "ct3d_quick": {**_COMMON, "options": {"slices": 8, "slice_patch": 2, "depth": 4, "n_3d_blocks": 1,
                                          "moe_blocks": [3], "train_encoder": "top", "limit_train": 200,
                                          "n_visual_tokens": 16, "max_answer_tokens": 200},
                   "steps": 60, "batch_size": 12, "lr": 2e-3, "pretrain_2d_steps": 60, "eval_limit": None},
    "ct3d": {**_COMMON, "options": {"slices": 16, "slice_patch": 2, "depth": 6, "n_3d_blocks": 2,
                                    "train_encoder": "all", "n_visual_tokens": 32, "max_answer_tokens": 200},
             "steps": 1500, "batch_size": 16, "lr": 1e-3, "pretrain_2d_steps": 600, "eval_limit": None},
}
ARMS = {
    "moe_2stage_2d": {"moe": True, "two_stage": True, "init": "2d"},
    "no_moe_2d": {"moe": False, "two_stage": False, "init": "2d"},
    "moe_1stage_2d": {"moe": True, "two_stage": False, "init": "2d"},
    "moe_2stage_random": {"moe": True, "two_stage": True, "init": "random"},
}
ANCHOR = {"row": "MedMNIST v2 (Yang et al. 2023), AdrenalMNIST3D 28^3, ResNet-50 + 3D conv, from scratch",
          "auc": 0.828, "acc": 0.745}


def _pretrain_2d(spec: dict[str, Any], work: Path, data_root: str | None) -> tuple[Path, dict[str, Any]]:
    """A quick supervised 2D ViT (the "2D model" whose weights go 3D)."""
    from medvlp.data import load_dataset
    from medvlp.data.torch_dataset import TorchImageDataset
    from medvlp.data.transforms import Preprocess
    from medvlp.methods.supervised import SupervisedMethod
    from medvlp.models import create_model, save_pretrained
    from medvlp.train.engine import TrainConfig, fit
    from medvlp.utils import seed_everything

    seed_everything(spec["seed"])
    depth = spec["options"].get("depth")
    bb = create_model(spec["encoder"], pretrained=False, **({"depth": depth} if depth else {}))
    ds = load_dataset("pneumoniamnist", root=data_root)
    train = ds.subset(ds.split == "train")
    method = SupervisedMethod(bb, train.num_outputs, train.task)
    t0 = time.time()
    res = fit(method, TorchImageDataset(train, Preprocess.from_dict(bb.preprocess)),
              TrainConfig(max_steps=spec["pretrain_2d_steps"], batch_size=64, lr=1e-3, device="cpu",
                          progress=False, log_every=20, seed=spec["seed"]), work / "pretrain_2d")
    folder = work / "pretrain_2d" / "model"
    info = {"what": f"supervised {spec['encoder']} (depth {depth or 'full'}) on PneumoniaMNIST train, "
                    f"{res.steps} steps of 64, from random init", "final": res.final,
            "seconds": round(time.time() - t0, 1), "folder": str(folder)}
    save_pretrained(bb, folder, metadata={"method": "supervised", "bench": "ct3d 2D init"})
    return folder, info


def _text_pretrained_lm(spec: dict[str, Any], data, work: Path) -> tuple[str, dict[str, Any]]:
    """Stand-in for a pretrained LM while the shipped report LM is missing: a tiny Llama trained
    on the TRAIN split's derived text only (prompt + answer, no images), saved as an HF folder
    and then used frozen like any named LM."""
    import torch

    from medvlp.methods.ct3d import load_lm

    lm = load_lm("tiny", tiny_hidden=spec["tiny_lm_hidden"])
    lm.model.requires_grad_(True)
    lm.model.train()
    texts = [f"{it.prompt()} {it.answer}{lm.tokenizer.eos_token}" for it in data.split_items("train")]
    opt = torch.optim.AdamW(lm.model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(spec["seed"])
    t0 = time.time()
    for step in range(spec["lm_text_steps"]):
        batch = [texts[i] for i in torch.randint(len(texts), (32,), generator=g).tolist()]
        enc = lm.tokenizer(batch, padding=True, add_special_tokens=False, return_tensors="pt")
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
        loss = lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    folder = work / "lm_text"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    return str(folder), {"what": f"tiny Llama (hidden {spec['tiny_lm_hidden']}, 2 layers, {lm.source}) trained "
                                 f"{spec['lm_text_steps']} steps on the train split's derived text only, then frozen",
                         "final_text_loss": float(loss.detach()), "seconds": round(time.time() - t0, 1)}


def _adrenal_classification(method, data, train_idx, test_idx) -> dict[str, Any]:
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    from medvlp.eval.vqa import _batches

    q = "What is the diagnosis of the adrenal gland? Answer:"
    closed_q = "Is the adrenal gland in this CT mask normal or hyperplastic?"
    y = data.volume_labels
    scores, feats = [], {}
    with torch.no_grad():
        for sl in _batches(len(test_idx), 32):
            vol = torch.from_numpy(data.volumes[test_idx[sl]])
            n = vol.shape[0]
            scores.append((method.answer_logprob(vol, [q] * n, [" hyperplasia"] * n)
                           - method.answer_logprob(vol, [q] * n, [" normal"] * n)).numpy())
        for name, idx in (("train", train_idx), ("test", test_idx)):
            out = []
            for sl in _batches(len(idx), 32):
                vol = torch.from_numpy(data.volumes[idx[sl]])
                pid, plen = method.encode_text([closed_q] * vol.shape[0])
                pe = method.prompt_embedding(pid, plen) if method.encoder.moe else None
                out.append(method.encoder.pooled(vol, pe).numpy())
            feats[name] = np.concatenate(out)
    s = np.concatenate(scores)
    yt = y[test_idx]
    clf = LogisticRegression(C=1.0, max_iter=2000).fit(feats["train"], y[train_idx])
    p = clf.predict_proba(feats["test"])[:, 1]
    return {"generative": {"auc": float(roc_auc_score(yt, s)), "acc": float(((s > 0) == yt).mean())},
            "probe": {"auc": float(roc_auc_score(yt, p)), "acc": float(((p > 0.5) == yt).mean())},
            "n_test": int(len(yt))}


def _run_arm(name: str, spec: dict[str, Any], data, init_folder: Path, work: Path, lm: str) -> dict[str, Any]:
    from medvlp.eval.vqa import evaluate_ct_items
    from medvlp.methods.ct3d import CTVQADataset, Collate, build_method, save_model
    from medvlp.models import create_model
    from medvlp.models.volume_vit import load_2d_backbone
    from medvlp.train.engine import TrainConfig, fit
    from medvlp.utils import seed_everything

    arm = ARMS[name]
    seed_everything(spec["seed"])
    depth = spec["options"].get("depth")
    if arm["init"] == "2d":
        bb = load_2d_backbone(init_folder)
    else:
        bb = create_model(spec["encoder"], pretrained=False, **({"depth": depth} if depth else {}))
    opts = dict(spec["options"], lm=lm, lm_lora_rank=spec["lm_lora_rank"],
                tiny_lm_hidden=spec["tiny_lm_hidden"], moe=arm["moe"],
                stage1_steps=spec["steps"] // 2 if arm["two_stage"] and arm["moe"] else 0)
    method = build_method(bb, opts)
    ds = CTVQADataset(data, data.split_items("train"), method.opts.task_groups)
    t0 = time.time()
    res = fit(method, ds, TrainConfig(max_steps=spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
                                      warmup_steps=5, device="cpu", progress=False, log_every=10,
                                      seed=spec["seed"]), work / name, collate_fn=Collate(method.tokenizer))
    train_s = time.time() - t0
    method.eval()
    save_model(method, work / name / "model", metadata={"method": "ct3d", "arm": name})
    t0 = time.time()
    test = data.split_items("test")
    if spec.get("eval_limit"):
        test = [it for t in ("closed", "open", "report") for it in
                [x for x in test if x.task == t][:spec["eval_limit"]]]
    gen = evaluate_ct_items(method, data, test, max_new_tokens=method.opts.max_answer_tokens)
    adrenal = np.flatnonzero(data.volume_labels >= 0)
    cls = _adrenal_classification(method, data, adrenal[data.volume_split[adrenal] == "train"],
                                  adrenal[data.volume_split[adrenal] == "test"])
    return {"arm": arm, "options": method.opts.model_dump(), "lm": method.lm.source,
            "train": {"steps": res.steps, "seconds": round(train_s, 1), "final": res.final,
                      "first": res.history[0] if res.history else None},
            "eval_seconds": round(time.time() - t0, 1), "generation": gen, "adrenal_classification": cls,
            "model_folder": str(work / name / "model")}


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    import torch

    from medvlp.data.ct_vqa import DERIVED_NOTE, build_ct_vqa
    from medvlp.methods.ct3d import RECONSTRUCTION_NOTE

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    work = (out / f".{spec['name']}_work").resolve()  # absolute: saved models name their LM folder
    work.mkdir(parents=True, exist_ok=True)
    if spec.get("init_2d"):
        init_folder, init_info = Path(spec["init_2d"]), {"what": f"medvlp 2D model folder {spec['init_2d']}"}
    else:
        init_folder, init_info = _pretrain_2d(spec, work, data_root)
    o = spec["options"]
    data = build_ct_vqa(data_root, shape=(o["slices"], 28, 28), seed=spec["seed"], limit_train=o.get("limit_train"))
    counts = {f"{s}/{t}": len(data.split_items(s, (t,))) for s in ("train", "val", "test")
              for t in ("closed", "open", "report")}
    lm, lm_info = spec["lm"], {"what": spec["lm"]}
    if spec["lm"] == "tiny" and spec.get("lm_text_steps"):
        lm, lm_info = _text_pretrained_lm(spec, data, work)
    arms = {name: _run_arm(name, spec, data, init_folder, work, lm) for name in spec["arms"]}
    return {"note": RECONSTRUCTION_NOTE, "text": DERIVED_NOTE, "init_2d": init_info, "lm": lm_info, "items": counts,
            "anchor": ANCHOR, "arms": arms}


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["CPU run on the shared 2-core machine (OMP threads <= 2); tiny scale. " + result["note"] + ".",
             f"All questions and reports are {result['text']}.",
             f"2D initialisation: {result['init_2d']['what']}.", "",
             f"Items per split/task: {result['items']}", ""]
    arms = result["arms"]
    first = next(iter(arms.values()))
    lines += [f"LM: {result['lm']['what']}; LoRA rank {first['options']['lm_lora_rank']} in the MLLM "
              "(the shipped report LM was not available when this ran)", ""]
    rows = []
    for name, a in arms.items():
        c = a["adrenal_classification"]
        rows.append([name, _f(c["generative"]["auc"]), _f(c["generative"]["acc"]), _f(c["probe"]["auc"]),
                     _f(c["probe"]["acc"]), a["train"]["steps"], a["train"]["seconds"]])
    rows.append([f"anchor: {result['anchor']['row']}", _f(result["anchor"]["auc"]), _f(result["anchor"]["acc"]),
                 "-", "-", "-", "-"])
    lines += ["## AdrenalMNIST3D classification (official test split)", ""]
    lines += md_table(["arm", "LM-score AUC", "LM-score ACC", "probe AUC", "probe ACC", "steps", "train s"], rows)
    rows = []
    for name, a in arms.items():
        for source, res in a["generation"].items():
            if not isinstance(res, dict):
                continue
            cl, op, rp = res.get("closed", {}), res.get("open", {}), res.get("report", {})
            rows.append([name, source, _f(cl.get("accuracy")), _f(op.get("bleu1")), _f(op.get("rougeL")),
                         _f(op.get("exact_match")), _f(rp.get("bleu1")), _f(rp.get("bleu4")), _f(rp.get("rouge1")),
                         _f(rp.get("rougeL"))])
    lines += ["", "## VQA and report generation (test split, greedy)", ""]
    lines += md_table(["arm", "source", "closed acc", "open BLEU-1", "open ROUGE-L", "open exact",
                       "report BLEU-1", "report BLEU-4", "report ROUGE-1", "report ROUGE-L"], rows)
    ex = first["generation"]
    lines += ["", "## Example generations (first arm)", ""]
    for source, res in ex.items():
        if isinstance(res, dict):
            for task, r in res.items():
                for e in r.get("examples", [])[:1]:
                    lines.append(f"- {source}/{task}: `{e['prompt']}` -> `{e['output']}` (target `{e['target']}`)")
    return lines
