"""``medvlp demo``: pretrain a backbone on real chest X-rays, probe it on two other real tasks,
export it, and report — offline, on the data bundled in the package, in minutes on a laptop CPU.

What it does, in order:
1. VIVID-Med pretraining of a ViT-Tiny (patch 4, 28 px) on the NIH ChestX-ray14 1,000-image set
   (its train split only): the 14 labels are compiled into UMS JSON and the frozen offline report LM
   (medvlp-reportlm, shipped with the package) teaches the ViT through SPD query groups; the LM is
   then dropped and only the ViT is kept;
2. frozen-feature linear probes (logistic regression, C chosen on val) on PneumoniaMNIST and
   BreastMNIST, official splits — tasks whose labels pretraining never saw — beside a random-init
   backbone of the same architecture and a logistic regression on raw pixels;
3. the table printed beside the published MedMNIST v2 numbers (ANCHORS.md), with 95 % bootstrap
   intervals;
4. export of the backbone (safetensors folder + ONNX with a parity check) and an HTML report.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

DEMO_TASKS = ("pneumoniamnist", "breastmnist")


DEMO_EPOCHS = 10


def run_demo(out_dir: str | Path = "runs/demo", *, data_root: str | None = None, epochs: int = DEMO_EPOCHS,
             seed: int = 0, console=None) -> dict[str, Any]:
    from rich.console import Console

    from medvlp.data import data_root as find_root
    from medvlp.data import load_dataset
    from medvlp.eval.anchors import anchor_rows
    from medvlp.eval.protocol import evaluate_backbone
    from medvlp.eval.report import TableSection, TextSection, write_html_report
    from medvlp.export import export_folder
    from medvlp.models import create_model, from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain
    from medvlp.utils import machine_info, seed_everything

    console = console or Console()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    root = find_root(data_root)
    console.rule("[bold]medvlp demo")
    console.print(f"data: {'data root ' + str(root) if root else 'sets bundled in the package'} (real, offline)")

    # 1. Pretrain. The offline report LM stands in for the paper's Qwen2.5-1.5B (see parts_used).
    cfg = PretrainConfig(
        data=DataConfig(dataset="nih1000", root=data_root),
        model=ModelConfig(name="vit_tiny_p4_28"),
        method=MethodConfig(name="vivid"),
        train=TrainConfig(epochs=epochs, batch_size=32, lr=5e-4, warmup_steps=10,
                          seed=seed, ckpt_every=100, log_every=10),
        out_dir=str(out / "pretrain"),
    )
    console.print(f"\n[bold]1/4 pretraining[/] VIVID-Med on NIH ChestX-ray14 (1,000 images; 14 labels as UMS "
                  f"JSON), {epochs} epochs -> {cfg.out_dir}")
    model_dir, result = run_pretrain(cfg)
    parts = json.loads((model_dir / "metadata.json").read_text()).get("parts_used", {})
    console.print("    parts: " + "; ".join(f"{k}: {v}" for k, v in parts.items()) + "; no network used")
    console.print(f"    done: {result.steps} steps, final loss {result.final.get('loss', float('nan')):.4f} "
                  f"(token CE {result.final.get('tok', float('nan')):.4f}) [{time.time() - t0:.0f} s]")

    # 2. Probe.
    console.print("\n[bold]2/4 linear probes[/] on frozen features, official test splits")
    tasks = [load_dataset(name, root=data_root) for name in DEMO_TASKS]
    pretrained = from_pretrained(model_dir)
    seed_everything(seed)
    random_init = create_model("vit_tiny_p4_28")
    reports = {
        "VIVID-Med on NIH (this run)": evaluate_backbone(pretrained, tasks, protocols=("logreg",), seeds=(seed,)),
        "random init, frozen": evaluate_backbone(random_init, tasks, protocols=("logreg",), seeds=(seed,)),
    }
    rows: list[dict[str, Any]] = []
    for label, rep in reports.items():
        for ds_name, ds in rep.to_json()["datasets"].items():
            p = ds["protocols"]["logreg"]
            rows.append(_row(ds_name, label, p["per_seed"][0]["metrics"], p["ci95"][str(seed)]))
    for ds in tasks:
        rows.append(_row(ds.name, "raw pixels, logistic regression", *_raw_pixel_probe(ds, seed)))

    # 3. Table beside published numbers.
    table_rows, printed = [], []
    for ds in tasks:
        ours = [r for r in rows if r["dataset"] == ds.name]
        published = [{"dataset": ds.name, "model": f"{a['model']} [{_short_source(a['source'])}]",
                      "auc": a.get("auc"), "acc": a.get("acc"), "auc_ci": None, "published": True}
                     for a in anchor_rows(ds.name)]
        table_rows += ours + published
        # The terminal shows MedMNIST v2's own rows and the measured floors; the report shows all.
        printed += ours + [r for r in published if "MedMNIST v2" in r["model"] or "measured" in r["model"]]
    console.print(f"    [{time.time() - t0:.0f} s]")
    _print_table(console, printed)

    # 4. Export and report.
    console.print("\n[bold]3/4 export[/]")
    export_dir = out / "export"
    export_folder(pretrained, export_dir, onnx=True,
                  metadata={"demo": True, "probe_results": [r for r in rows if "this run" in r["model"]]})
    onnx_info = json.loads((export_dir / "metadata.json").read_text()).get("onnx", {})
    console.print(f"    {export_dir}: config.json, model.safetensors (loads as plain timm), model.onnx "
                  f"(parity with PyTorch: max |diff| {onnx_info.get('max_abs_diff', float('nan')):.2e})")

    console.print("\n[bold]4/4 report[/]")
    results = {
        "rows": table_rows,
        "pretrain": {"steps": result.steps, "final": result.final, "config": cfg.model_dump(mode="json"),
                     "parts_used": parts},
        "evaluations": {k: v.to_json() for k, v in reports.items()},
        "machine": machine_info(),
        "seconds": round(time.time() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(results, indent=2, default=_json_default))
    sections: list[Any] = [
        TextSection("What ran",
                    "VIVID-Med pretraining of vit_tiny_p4_28 on NIH ChestX-ray14 (1,000 real images; labels compiled "
                    "into UMS JSON, frozen offline report LM as teacher, LM discarded after training), then "
                    "logistic-regression probes on frozen features for PneumoniaMNIST and BreastMNIST (official "
                    "splits). Published rows are from MedMNIST v2 and MedMNIST+ (ANCHORS.md): most train whole "
                    "networks on the task, so they are context, not a like-for-like comparison with a frozen probe."),
        TableSection("Results beside published numbers", [
            {"dataset": r["dataset"], "model": r["model"], "AUC": _fmt(r["auc"]),
             "95% CI": f"{r['auc_ci'][0]:.3f}–{r['auc_ci'][1]:.3f}" if r.get("auc_ci") else "",
             "ACC": _fmt(r["acc"])} for r in table_rows]),
    ]
    for label, rep in reports.items():
        sections += [replace(sec, title=f"{label}: {sec.title}") for sec in rep.report_sections()]
    sections.append(_spd_attention(model_dir, pretrained, data_root))
    report_path = write_html_report(out / "report.html", title="medvlp demo", sections=sections)

    console.rule("[bold]where everything went")
    console.print(f"pretrained model : {model_dir}")
    console.print(f"exported model   : {export_dir}")
    console.print(f"results JSON     : {out / 'results.json'}")
    console.print(f"HTML report      : {report_path}")
    console.print(f"training log     : {Path(cfg.out_dir) / 'metrics.jsonl'}")
    console.print(f"total time       : {results['seconds']:.0f} s")
    return results


def _spd_attention(model_dir: Path, backbone, data_root):
    """Where each SPD query group of the trained ViT looks, on NIH-1000 test images (diagnostics)."""
    from medvlp.data import load_dataset
    from medvlp.data.transforms import Preprocess
    from medvlp.eval.attention_maps import attention_section
    from medvlp.methods.vivid import load_vivid_prefix_model

    images = load_dataset("nih1000", root=data_root).split_view("test")
    return attention_section(load_vivid_prefix_model(model_dir), images, Preprocess.from_dict(backbone.preprocess),
                             n=4, title="SPD attention maps (NIH-1000 test images; H = attention entropy)")


def _raw_pixel_probe(ds, seed: int):
    from medvlp.eval.metrics import bootstrap_ci
    from medvlp.eval.probe import raw_pixel_probe

    res = raw_pixel_probe(ds, seed=seed)
    lo, hi = bootstrap_ci(ds.split_view("test").labels, res.test_scores, ds.task, metric="macro_auc", seed=seed)
    return res.metrics, {"metric": "macro_auc", "lo": lo, "hi": hi}


def _row(dataset: str, model: str, metrics: dict, ci: dict) -> dict[str, Any]:
    auc_ci = [ci["lo"], ci["hi"]] if ci and ci.get("metric") == "macro_auc" else None
    return {"dataset": dataset, "model": model, "auc": metrics.get("macro_auc"), "acc": metrics.get("accuracy"),
            "auc_ci": auc_ci, "note": ""}


def _short_source(source: str) -> str:
    if source.startswith("measured"):
        return "measured floor"
    return source.split(" (")[0]


def _fmt(x) -> str:
    return "—" if x is None else f"{x:.3f}"


def _print_table(console, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Test AUC / ACC: frozen linear probes (this run) beside published rows [in brackets]")
    for col in ("dataset", "model", "AUC", "95% CI", "ACC"):
        table.add_column(col)
    for r in rows:
        ci = r.get("auc_ci")
        table.add_row(r["dataset"], r["model"], _fmt(r["auc"]),
                      f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else "", _fmt(r["acc"]))
    console.print(table)


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
