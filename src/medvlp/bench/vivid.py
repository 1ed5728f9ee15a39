"""VIVID-Med suites: ``vivid`` (full) and ``vivid_quick``.

Rows (same tasks, splits, logreg probe and seeds as the baselines, through ``bench.common``):

- probe rows for each pretrained arm: VIVID (UMS + SPD) and the ablation chain of METHODS.md 1.7
  Table 3 (free text -> UMS -> UMS + SPD, Q-Former proxy), the no-LM UMS classifier, the
  random-init frozen LM, answerability masking off. Every arm pretrains on NIH-1000 *train*
  labels, so NIH-1000 test rows are labelled **in-domain**; the other tasks never saw labels.
- cross-dataset head **transfer** (not zero-shot): a logistic head fitted on NIH-1000 train
  features (its Pneumonia column) scored unchanged on PneumoniaMNIST test.
- export: the VIVID ViT saved as a model folder, reloaded as plain timm, ONNX parity.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from medvlp.bench.common import PROBE_TASKS, load_tasks, md_table, probe_rows, quality_markdown

log = logging.getLogger(__name__)

_ARMS = {
    "vivid": ("VIVID-Med (UMS + SPD)", "vivid", {}),
    "free_text": ("ablation: free text (no UMS)", "vivid", {"target": "free_text", "spd": False}),
    "ums_no_spd": ("ablation: UMS, no SPD", "vivid", {"spd": False}),
    "qformer": ("ablation: Q-Former proxy (G=1, M=8, lambda=0)", "vivid",
                {"groups": 1, "queries_per_group": 8, "lambda_ortho": 0.0}),
    "no_mask": ("ablation: answerability masking off", "vivid", {"answerability_mask": False}),
    "random_lm": ("control: random-init frozen LM", "vivid", {"random_init": True}),
    "ums_classifier": ("control: no-LM UMS classifier", "ums_classifier", {}),
}

SUITES: dict[str, dict[str, Any]] = {
    "vivid": {"tasks": PROBE_TASKS, "dataset_kwargs": {"ham10000": {"limit": 2000}},
              "model": "vit_tiny_p4_28", "epochs": 6, "batch_size": 32, "lr": 5e-4, "seeds": [0],
              "arms": list(_ARMS), "teacher": None},
    # The whole ablation chain at the quick schedule, on every probe task (~35 min on 2 cores).
    "vivid_ablation": {"tasks": PROBE_TASKS, "dataset_kwargs": {"ham10000": {"limit": 2000}},
                       "model": "vit_tiny_p4_28", "epochs": 2, "batch_size": 32, "lr": 5e-4, "seeds": [0],
                       "arms": list(_ARMS), "teacher": None},
    # <= 12 min on 2 cores: three arms, the three chest/breast tasks.
    "vivid_quick": {"tasks": ["pneumoniamnist", "breastmnist", "nih1000"], "dataset_kwargs": {},
                    "model": "vit_tiny_p4_28", "epochs": 2, "batch_size": 32, "lr": 5e-4, "seeds": [0],
                    "arms": ["vivid", "ums_no_spd", "ums_classifier"], "teacher": None},
}


def _teacher(spec: dict[str, Any]) -> str | None:
    """The configured teacher; the offline report LM when shipped, else the tiny random LM (said)."""
    if spec.get("teacher"):
        return spec["teacher"]
    from medvlp.models.causal_lm import REPORTLM_FOLDER
    return None if (REPORTLM_FOLDER / "config.json").exists() else "tiny"


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    from medvlp.models import from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    tasks, skipped = load_tasks(spec["tasks"], data_root, spec["dataset_kwargs"])
    teacher = _teacher(spec)
    rows: list[dict[str, Any]] = []
    arms: dict[str, Any] = {}
    work = out / f".{spec['name']}_work"
    vivid_dir = None
    for key in spec["arms"]:
        label, method, opts = _ARMS[key]
        opts = dict(opts)
        if method == "vivid":
            opts.setdefault("teacher", teacher)
            opts.setdefault("max_text_length", 2048)
        t0 = time.time()
        cfg = PretrainConfig(data=DataConfig(dataset="nih1000", root=data_root),
                             model=ModelConfig(name=spec["model"]), method=MethodConfig(name=method, options=opts),
                             train=TrainConfig(epochs=spec["epochs"], batch_size=spec["batch_size"], lr=spec["lr"],
                                               warmup_steps=10, seed=spec["seeds"][0], progress=False),
                             out_dir=str(work / key))
        model_dir, res = run_pretrain(cfg)
        pre_s = time.time() - t0
        backbone = from_pretrained(model_dir)
        meta = backbone.metadata
        for r in probe_rows(label, backbone, tasks, seeds=tuple(spec["seeds"]), init=method):
            if r["task"] == "nih1000":
                r["method"] = f"{label} [in-domain: pretrained on NIH-1000 train labels]"
            rows.append(r)
        arms[key] = {"label": label, "method": method, "options": opts, "pretrain_seconds": round(pre_s, 1),
                     "final": res.final, "parts_used": meta.get("parts_used", {}),
                     "probe_seconds": round(time.time() - t0 - pre_s, 1)}
        if key == "vivid":
            vivid_dir = model_dir
            arms[key]["transfer"] = _transfer_row(backbone, tasks)
        log.warning("bench vivid: %s done in %.0f s", key, time.time() - t0)
    export = _export_row(vivid_dir, work) if vivid_dir is not None else None
    return {"rows": rows, "skipped": skipped, "arms": arms, "teacher": teacher, "export": export,
            "tasks": [t.describe() for t in tasks]}


def _transfer_row(backbone, tasks) -> dict[str, Any] | None:
    """NIH-1000 head (Pneumonia column) applied unchanged to PneumoniaMNIST test."""
    from medvlp.eval.features import features_for_splits
    from medvlp.eval.transfer import transfer_head

    by = {t.name: t for t in tasks}
    if "nih1000" not in by or "pneumoniamnist" not in by:
        return None
    nih, pm = by["nih1000"], by["pneumoniamnist"]
    src, tgt = features_for_splits(backbone, nih), features_for_splits(backbone, pm)
    res = transfer_head(src["train"], tgt["test"], "multilabel", {nih.label_names.index("Pneumonia"): 1},
                        target_task="binary", source_val=src["val"])
    return {"source": "nih1000 (train, Pneumonia column)", "target": "pneumoniamnist (test)",
            "auc": res.metrics.get("macro_auc"), "C": res.chosen["C"],
            "note": "cross-dataset head transfer; pretraining never saw PneumoniaMNIST labels"}


def _export_row(model_dir: Path, work: Path) -> dict[str, Any]:
    import torch

    from medvlp.export import export_onnx
    from medvlp.models import from_pretrained, load_timm

    bb = from_pretrained(model_dir)
    timm_model = load_timm(model_dir).eval()
    x = torch.randn(2, bb.in_chans, bb.img_size, bb.img_size)
    with torch.no_grad():
        diff_timm = float((timm_model.forward_head(timm_model.forward_features(x), pre_logits=True)
                           - bb.eval().pooled(x)).abs().max())
    rec = export_onnx(bb, work / "export" / "model.onnx")  # work dirs are git-ignored
    return {"timm_max_abs_diff": diff_timm, "onnx_max_abs_diff": rec["max_abs_diff"], "onnx_passed": rec["passed"]}


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["2-core shared CPU run (wall-clock timings include other jobs on the same cores). Teacher LM: "
             f"{'offline report LM' if result.get('teacher') is None else result['teacher']} "
             "(see parts_used per arm below).", ""]
    if result.get("teacher") == "tiny":
        lines += ["**Caveat:** the offline report LM was not in this checkout, so the LM arms used a tiny "
                  "*random* Llama (a random-init frozen LM, near-uniform logits): these rows test the "
                  "pipeline, not VIVID-Med's knowledge transfer. Re-run once the report LM ships.", ""]
    lines += ["## Quality (test split, logreg probe)", ""]
    lines += quality_markdown(result["rows"], result.get("skipped")) + ["", "## Arms", ""]
    lines += md_table(["arm", "pretrain s", "final tok loss", "teacher / targets"],
                      [[a["label"], a["pretrain_seconds"], f"{a['final'].get('tok', a['final'].get('loss', float('nan'))):.3f}",
                        "; ".join(f"{k}: {v}" for k, v in a["parts_used"].items() if k != "image_backbone")]
                       for a in result["arms"].values()])
    tr = (result["arms"].get("vivid") or {}).get("transfer")
    if tr:
        lines += ["", "## Cross-dataset head transfer (not zero-shot)", "",
                  f"{tr['source']} -> {tr['target']}: AUC {tr['auc']:.3f} (C={tr['C']}). {tr['note']}."]
    ex = result.get("export")
    if ex:
        lines += ["", "## Export", "", f"plain timm vs medvlp max |diff| {ex['timm_max_abs_diff']:.2e}; "
                  f"ONNX vs PyTorch max |diff| {ex['onnx_max_abs_diff']:.2e} (passed: {ex['onnx_passed']})."]
    return lines
