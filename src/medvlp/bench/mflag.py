"""M-FLAG suites (``mflag_quick``, ``mflag``): pretrain with a frozen text encoder, probe like every method.

Protocol (the same tasks, splits, logistic-regression probe and seeds as the baselines,
:mod:`medvlp.bench.common`):

- pretraining A: M-FLAG on the NIH-1000 training split, text rendered from its labels (the
  bundled images have no reports; the rows say so), probed on every task except NIH (excluded:
  its labels became the text);
- pretraining B: M-FLAG on PneumoniaMNIST training images (label text), probed on NIH only, so
  NIH also gets a row from a model that never saw its labels;
- random init of the same architecture, probed on every task;
- ``mflag`` (not run here) adds the paper-reading orthogonality variant and an orthogonality-off
  ablation.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from medvlp.bench.common import PROBE_TASKS, load_tasks, md_table, probe_rows, quality_markdown

log = logging.getLogger(__name__)

SUITES: dict[str, dict[str, Any]] = {
    "mflag_quick": {
        "tasks": PROBE_TASKS,
        "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "resnet18_28",
        "batch_size": 64,
        "lr": 1e-3,
        "nih_epochs": 4,
        "pneumonia_steps": 30,
        # Half the pertinent negatives dropped: shorter texts (the frozen encoder dominates step time on CPU).
        "options": {"absent_drop_p": 0.5},
        "variants": {"M-FLAG (code orth)": {}},
        "protocols": ["logreg"],
        "seeds": [0],
    },
    # Ablation of the orthogonality term (NIH pretraining only; random-init rows are in mflag_quick).
    "mflag_orth_quick": {
        "tasks": PROBE_TASKS,
        "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "resnet18_28",
        "batch_size": 64,
        "lr": 1e-3,
        "nih_epochs": 4,
        "pretrain_sets": ["nih1000"],
        "random_init": False,
        "options": {"absent_drop_p": 0.5},
        "variants": {"M-FLAG (paper-reading orth)": {"orth_variant": "paper"},
                     "M-FLAG (no orth)": {"orth_weight": 0.0}},
        "protocols": ["logreg"],
        "seeds": [0],
    },
    "mflag": {
        "tasks": PROBE_TASKS,
        "dataset_kwargs": {},
        "model": "resnet18_28",
        "batch_size": 64,
        "lr": 1e-3,
        "nih_epochs": 40,
        "pneumonia_steps": 300,
        "options": {"absent_drop_p": 0.5},
        "variants": {"M-FLAG (code orth)": {},
                     "M-FLAG (paper-reading orth)": {"orth_variant": "paper"},
                     "M-FLAG (no orth)": {"orth_weight": 0.0}},
        "protocols": ["logreg", "knn"],
        "seeds": [0, 1, 2],
    },
}

TEXT_NOTE = "text rendered from labels (no real reports)"


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    from medvlp.models import create_model, from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain
    from medvlp.utils import seed_everything

    work = out / f".{spec['name']}_work"
    tasks, skipped = load_tasks(spec["tasks"], data_root, spec["dataset_kwargs"])
    seeds, protocols = tuple(spec["seeds"]), tuple(spec["protocols"])
    rows: list[dict[str, Any]] = []
    timings: dict[str, float] = {}
    pretrain: dict[str, Any] = {}
    t_stage = time.time()

    def lap(name: str) -> None:
        nonlocal t_stage
        timings[name] = round(time.time() - t_stage, 1)
        log.warning("bench: %s took %.1f s", name, timings[name])
        t_stage = time.time()

    if spec.get("random_init", True):
        seed_everything(seeds[0])
        rows += probe_rows(f"random init {spec['model']} (frozen)", create_model(spec["model"]), tasks,
                           protocols=protocols, seeds=seeds, init="random")
        lap("random init probes")
    sets = spec.get("pretrain_sets", ["nih1000", "pneumoniamnist"])

    for label, options in spec["variants"].items():
        for data_name, train_kw, probe_on in (
                ("nih1000", {"epochs": spec["nih_epochs"]}, list(tasks)),
                ("pneumoniamnist", {"max_steps": spec.get("pneumonia_steps", 1)},
                 [t for t in tasks if t.name == "nih1000"])):
            if not probe_on or data_name not in sets:
                continue
            tag = f"{label} on {data_name}"
            cfg = PretrainConfig(
                data=DataConfig(dataset=data_name, root=data_root), model=ModelConfig(name=spec["model"]),
                method=MethodConfig(name="mflag", options={**spec.get("options", {}), **options}),
                train=TrainConfig(batch_size=spec["batch_size"], lr=spec["lr"], warmup_steps=10,
                                  seed=seeds[0], progress=False, **train_kw),
                out_dir=str(work / tag.replace(" ", "_").replace("(", "").replace(")", "")))
            t0 = time.time()
            model_dir, res = run_pretrain(cfg)
            backbone = from_pretrained(model_dir)
            pretrain[tag] = {"steps": res.steps, "epochs": round(res.epochs, 2), "final": res.final,
                             "seconds": round(time.time() - t0, 1),
                             "options": {**spec.get("options", {}), **options},
                             "parts_used": backbone.metadata.get("parts_used", {})}
            lap(f"{tag} pretraining")
            name = f"{label}, pretrained on {data_name} ({TEXT_NOTE})"
            # A is probed everywhere, NIH as an explicit excluded row; B only on NIH.
            rows += probe_rows(name, backbone, probe_on, protocols=protocols, seeds=seeds, init="medvlp mflag",
                               excluded={data_name: "pretraining used this task's labels (as text)"})
            lap(f"{tag} probes")
    return {"quality": {"rows": rows, "skipped": skipped, "tasks": [t.describe() for t in tasks],
                        "seconds": timings}, "pretrain": pretrain}


def markdown(result: dict[str, Any]) -> list[str]:
    lines = ["2-core shared CPU run (OMP_NUM_THREADS=1). Text for every M-FLAG model is "
             f"**{TEXT_NOTE}**: report-style sentences rendered from each image's UMS labels, re-worded "
             "every epoch; the frozen text encoder is the offline all-MiniLM-L6-v2 (the paper's CXR-BERT is "
             "not available offline). Compare with the baseline rows in quick.md (same tasks, splits, probe).",
             ""]
    pre = result.get("pretrain", {})
    if pre:
        lines += ["## Pretraining", ""] + md_table(
            ["run", "steps", "epochs", "final align", "final orth", "final cos", "seconds"],
            [[k, v["steps"], v["epochs"], f"{v['final'].get('align', float('nan')):.3f}",
              f"{v['final'].get('orth', float('nan')):.3f}", f"{v['final'].get('cos', float('nan')):.3f}",
              v["seconds"]] for k, v in pre.items()]) + [""]
    q = result.get("quality")
    if q:
        lines += ["## Quality (test split, frozen features, logistic-regression probe)", ""]
        lines += quality_markdown(q["rows"], q.get("skipped"))
        lines += [""] + _versus_random(q["rows"])
        lines += ["", "Stage timings (s): " + ", ".join(f"{k} {v}" for k, v in q.get("seconds", {}).items())]
    return lines


def _versus_random(rows: list[dict[str, Any]]) -> list[str]:
    """Each M-FLAG row against random init of the same architecture: AUC difference and whether the
    random-init mean falls inside M-FLAG's 95 % CI (i.e. no resolvable difference at this size)."""
    def auc(r):
        return r["summary"].get("macro_auc", {}).get("mean") if "summary" in r else None

    def ci(r):
        rec = next(iter((r.get("ci95") or {}).values()), {})
        return (rec["lo"], rec["hi"]) if rec.get("metric") == "macro_auc" else None

    random = {r["task"]: r for r in rows if r.get("init") == "random" and auc(r) is not None}
    out = []
    for r in rows:
        if r.get("init") != "medvlp mflag" or auc(r) is None or r["task"] not in random:
            continue
        base, c = auc(random[r["task"]]), ci(r)
        inside = "yes" if c and c[0] <= base <= c[1] else "no"
        out.append([r["task"], r["method"].split(" (text rendered")[0], f"{auc(r):.3f}", f"{base:.3f}", f"{auc(r) - base:+.3f}",
                    inside])
    if not out:
        return []
    return ["## M-FLAG against random init (same architecture, same probe)", ""] + md_table(
        ["task", "M-FLAG run", "M-FLAG AUC", "random-init AUC", "difference", "random inside M-FLAG's 95% CI"],
        out)
