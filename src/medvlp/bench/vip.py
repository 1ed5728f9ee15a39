"""ViP bench suites (``vip``, ``vip_quick``): k-shot prompt learning on a frozen dual encoder.

Tasks: PneumoniaMNIST (official split) and HAM10000 melanoma vs nevus (lesion-wise split of
``data.ham10000``). For each k in the sweep (per class; "full" = the whole train split) and each
seed: zero-shot with class names, zero-shot with the mean of the symptoms, CoOp, ViP with CoP only
(= mean merge), CoP + max merge, MeP only and the full ViP; plus a logistic-regression probe on the
same frozen image features and the same k shots, for scale. Accuracy and macro-F1 on the test split,
mean ± std over seeds.

The dual encoder: ``spec["encoder"]`` when given (e.g. ``open_clip:ViT-B-16@openai`` on a machine
with the weights); otherwise the offline one: an image side that medvlp pretrains with M-FLAG on
NIH ChestX-ray14 (1,000 images, label-derived report text) — data other than both evaluated tasks —
and the frozen MiniLM text side. Image features are extracted once per task (the encoder is
frozen), so every prompt run only trains the prompt parameters.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvlp.bench.common import md_table

log = logging.getLogger(__name__)

ALL_VARIANTS = ["zeroshot_names", "zeroshot_symptoms", "coop", "vip_cop", "vip_cop_max", "vip_mep", "vip"]
TASKS: dict[str, dict[str, Any]] = {
    "pneumoniamnist": {"dataset": "pneumoniamnist", "symptoms": "pneumoniamnist", "class_map": {}},
    "ham10000_mel_nv": {"dataset": "ham10000", "symptoms": "melanoma_nevus",
                        "class_map": {"mel": "melanoma", "nv": "nevus"}},
}
_BASE = {"tasks": list(TASKS), "shots": [1, 2, 4, 8, 16, "full"], "seeds": [1, 2, 3],
         "variants": ALL_VARIANTS, "encoder": None}
SUITES: dict[str, dict[str, Any]] = {
    # The k-shot sweep of the issue on the 2-core CPU (encoder cached after the first run): k in
    # {1, 2, 4, 8, 16, full}, 20 epochs per k-shot run
    # (ViP: 50), 30-step full-data runs, HAM10000 limited to a stratified 3,000 images before
    # keeping melanoma and nevus.
    "vip_quick": {**_BASE, "shots": [1, 2, 4, 8, 16, "full"], "train": {"epochs": 20, "evals": 5},
                  "full": {"batch_size": 256, "max_steps": 30, "evals": 5},
                  "dataset_options": {"ham10000_mel_nv": {"limit": 3000}},
                  "pretrain": {"dataset": "nih1000", "model": "vit_tiny_p4_28", "epochs": 10}},
    "vip": {**_BASE, "train": {"epochs": 50, "evals": 25},
            "full": {"batch_size": 64, "max_steps": 1000, "evals": 20},
            "dataset_options": {},
            "pretrain": {"dataset": "nih1000", "model": "vit_tiny_p4_28", "epochs": 30}},
}


def offline_encoder(spec: dict[str, Any], work: Path, data_root: str | None) -> tuple[str, dict[str, Any]]:
    """The dual-encoder spec to use and how it was obtained."""
    if spec.get("encoder"):
        return spec["encoder"], {"spec": spec["encoder"], "how": "given"}
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    p = spec["pretrain"]
    out = work / f"mflag_{p['dataset']}"
    if (out / "model" / "dual_encoder.json").is_file():
        return f"medvlp:{out / 'model'}", {"spec": f"medvlp:{out / 'model'}", "pretrain": p,
                                           "how": "M-FLAG pretraining, cached from an earlier run of this suite"}
    t0 = time.time()
    cfg = PretrainConfig(data=DataConfig(dataset=p["dataset"], root=data_root),
                         model=ModelConfig(name=p["model"]), method=MethodConfig(name="mflag"),
                         train=TrainConfig(epochs=p["epochs"], batch_size=64, lr=1e-3, progress=False,
                                           device="cpu"),
                         out_dir=str(out))
    model_dir, _ = run_pretrain(cfg)
    return f"medvlp:{model_dir}", {"spec": f"medvlp:{model_dir}", "how": "M-FLAG pretraining",
                                   "pretrain": p, "seconds": round(time.time() - t0, 1)}


def _task_features(name: str, spec: dict[str, Any], encoder, data_root):
    from medvlp.data import load_dataset
    from medvlp.knowledge.symptoms import load_symptoms
    from medvlp.train.adapt import task_classes

    t = TASKS[name]
    sset = load_symptoms(t["symptoms"])
    data = load_dataset(t["dataset"], root=data_root, **spec.get("dataset_options", {}).get(name, {}))
    rows, labels, classes = task_classes(data, list(sset.classes), t["class_map"])
    data = data.subset(rows)
    t0 = time.time()
    x = torch.from_numpy(encoder.image_features(data))
    info = {"dataset": data.name, "classes": classes, "symptoms": f"{sset.task} ({sset.source})",
            "n": {s: int(np.sum(data.split == s)) for s in ("train", "val", "test")},
            "counts_test": np.bincount(labels[data.split == "test"], minlength=len(classes)).tolist(),
            "split_source": data.meta.get("split_source", "official"),
            "feature_seconds": round(time.time() - t0, 1)}
    return sset, classes, x, torch.from_numpy(labels), np.asarray(data.split), info


def _probe(feats) -> dict[str, float]:
    """Logistic regression on the same frozen features and shots (C picked on the val set)."""
    from sklearn.linear_model import LogisticRegression

    from medvlp.eval.metrics import classification_metrics

    (xt, yt), (xv, yv), (xs, ys) = feats["train"], feats["val"], feats["test"]
    best = None
    for c in (0.01, 0.1, 1.0, 10.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(xt.numpy(), yt.numpy())
        acc = float((clf.predict(xv.numpy()) == yv.numpy()).mean())
        if best is None or acc > best[0]:
            best = (acc, clf)
    return classification_metrics(ys.numpy(), best[1].predict_proba(xs.numpy()), "multiclass")


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    from medvlp.models.dual_encoder import load_dual_encoder
    from medvlp.train.adapt import AdaptTrain, PromptOptions, adapt_on_features, select_shots

    work = out / f".{spec['name']}_work"
    enc_spec, enc_info = offline_encoder(spec, work, data_root)
    encoder = load_dual_encoder(enc_spec)
    runs: list[dict[str, Any]] = []
    tasks: dict[str, Any] = {}
    for name in spec["tasks"]:
        sset, classes, x, y, split, info = _task_features(name, spec, encoder, data_root)
        tasks[name] = info
        for shots in spec["shots"]:
            for seed in spec["seeds"]:
                idx = select_shots(y.numpy(), split, shots, 4, seed)
                feats = {k: (x[v], y[v]) for k, v in idx.items()}
                train = AdaptTrain(**{**spec["train"], **(spec["full"] if shots == "full" else {}), "seed": seed})
                probe = _probe(feats)
                runs.append(_row(name, "linear_probe", "logistic regression on the image features",
                                 shots, seed, probe, None))
                for variant in spec["variants"]:
                    if variant.startswith("zeroshot") and (shots != spec["shots"][0] or seed != spec["seeds"][0]):
                        continue  # no training and no shots: one evaluation per task
                    _, res = adapt_on_features(variant, encoder, classes, sset.classes, feats,
                                               modality=sset.modality, prompt=PromptOptions(), train=train)
                    runs.append(_row(name, variant, res["label"], "-" if variant.startswith("zeroshot") else shots,
                                     seed, res["metrics"], res["fit"], res["prompt_parameters"]))
                log.info("vip bench: %s k=%s seed=%s done", name, shots, seed)
    return {"encoder": {**enc_info, "parts_used": encoder.parts_used}, "tasks": tasks, "runs": runs,
            "summary": summarize(runs)}


def _row(task, variant, label, shots, seed, metrics, fit, params=0) -> dict[str, Any]:
    return {"task": task, "variant": variant, "label": label, "shots": shots, "seed": seed,
            "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"], "macro_auc": metrics["macro_auc"],
            "train_seconds": fit["seconds"] if fit else 0.0, "steps": fit["steps"] if fit else 0,
            "best_step": fit["best_step"] if fit else None, "prompt_parameters": params}


def summarize(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and std over seeds of accuracy and macro-F1 per (task, variant, shots)."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault((r["task"], r["variant"], str(r["shots"])), []).append(r)
    out = []
    for (task, variant, shots), rs in groups.items():
        acc = np.array([r["accuracy"] for r in rs], dtype=float)
        f1 = np.array([r["macro_f1"] for r in rs], dtype=float)
        out.append({"task": task, "variant": variant, "label": rs[0]["label"], "shots": shots,
                    "n_seeds": len(rs), "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std()),
                    "macro_f1_mean": float(f1.mean()), "macro_f1_std": float(f1.std()),
                    "train_seconds_mean": float(np.mean([r["train_seconds"] for r in rs]))})
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    enc = result["encoder"]
    lines = ["## ViP: k-shot prompt learning on a frozen dual encoder", "",
             "2-core CPU run. Test-split accuracy / macro-F1 (×100), mean ± std over seeds "
             f"{sorted({r['seed'] for r in result['runs']})}; k = labelled images per class "
             "(validation: min(k, 4) per class; full = whole train and val splits).", "",
             f"Dual encoder: `{enc['spec']}` ({enc['how']}). Parts used: "
             + "; ".join(f"{k}: {v}" for k, v in enc.get("parts_used", {}).items()) + ".", ""]
    for task, info in result["tasks"].items():
        rows = [s for s in result["summary"] if s["task"] == task]
        shots = list(dict.fromkeys(s["shots"] for s in rows if s["shots"] != "-"))
        lines += [f"### {task}", "",
                  f"Classes {info['classes']}; images train/val/test {info['n']['train']}/{info['n']['val']}/"
                  f"{info['n']['test']} (test per class {info['counts_test']}); split: {info['split_source']}; "
                  f"symptoms: {info['symptoms']}. Always predicting the majority class scores "
                  f"{100 * max(info['counts_test']) / max(1, sum(info['counts_test'])):.1f} / "
                  f"{100 * _majority_f1(info['counts_test']):.1f}.", ""]
        table = []
        for variant in dict.fromkeys(s["variant"] for s in rows):
            vr = {s["shots"]: s for s in rows if s["variant"] == variant}
            label = next(iter(vr.values()))["label"]
            if "-" in vr:  # zero-shot: the same number in every column
                table.append([label] + [_cell(vr["-"])] * len(shots))
            else:
                table.append([label] + [_cell(vr[k]) if k in vr else "" for k in shots])
        lines += md_table(["method"] + [f"k={k}" for k in shots], table) + [""]
    return lines


def _majority_f1(counts: list[int]) -> float:
    """Macro-F1 of always predicting the largest class: F1 = 2p/(1+p) for it, 0 for the others."""
    p = max(counts) / max(1, sum(counts))
    return 2 * p / (1 + p) / len(counts)


def _cell(s: dict[str, Any]) -> str:
    return (f"{100 * s['accuracy_mean']:.1f}±{100 * s['accuracy_std']:.1f} / "
            f"{100 * s['macro_f1_mean']:.1f}±{100 * s['macro_f1_std']:.1f}")
