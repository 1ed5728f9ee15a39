"""``medvlp bench``: named suites that measure every method in one harness.

Two parts:
- **quality**: for each downstream task, the same splits and the same probe for every backbone
  (random init, supervised-pretrained on NIH ChestX-ray14, ImageNet-initialised EfficientNet-Lite0,
  and later issues' methods), plus a supervised-from-scratch model and a raw-pixel floor;
- **speed**: training images/s of the medvlp engine against a plain hand-written timm loop on the
  same model, batch and data in the same process (target ratio >= 0.90), and feature-extraction
  images/s.

Results go to ``<out>/<suite>.json`` (with machine, seeds and config) and ``<out>/<suite>.md``.
"""
from __future__ import annotations

import json
import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvlp.errors import DataError

log = logging.getLogger(__name__)

SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "tasks": ["pneumoniamnist", "breastmnist", "nih1000", "ham10000", "tcga_luad_contrast"],
        "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "vit_tiny_p4_28",
        "pretrain_epochs": 15,
        "scratch_epochs": 5,
        "protocols": ["logreg"],
        "seeds": [0],
        "speed": {"model": "vit_tiny_p4_28", "batch_size": 64, "steps": 40, "repeats": 3},
    },
    "full": {
        "tasks": ["pneumoniamnist", "breastmnist", "nih1000", "ham10000", "tcga_luad_contrast"],
        "dataset_kwargs": {},
        "model": "vit_tiny_p4_28",
        "pretrain_epochs": 60,
        "scratch_epochs": 20,
        "protocols": ["logreg", "knn", "torch_linear"],
        "seeds": [0, 1, 2],
        "speed": {"model": "vit_small_p4_28", "batch_size": 128, "steps": 100, "repeats": 5},
    },
    # Knowledge layer: rules-labeler throughput over the 3,851 IU X-ray reports and the speed-up of
    # a re-run served from the answer cache.
    "structuring": {"parts": ["structuring"]},
}


def run_suite(suite: str, out_dir: str | Path, *, data_root: str | None = None,
              parts: list[str] | None = None) -> list[Path]:
    from medvlp.utils import machine_info

    if suite not in SUITES:
        raise ValueError(f"unknown suite {suite!r}; available: {', '.join(SUITES)}")
    spec = SUITES[suite]
    parts = parts or spec.get("parts", ["quality", "speed"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result: dict[str, Any] = {"suite": suite, "config": spec, "machine": machine_info(),
                              "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if "structuring" in parts:
        from medvlp.knowledge.structure import benchmark_structuring

        result["structuring"] = benchmark_structuring()
    if "speed" in parts:
        result["speed"] = measure_speed(**spec["speed"])
    if "quality" in parts:
        result["quality"] = measure_quality(spec, data_root=data_root, work_dir=out / f".{suite}_work")
    result["seconds"] = round(time.time() - t0, 1)
    json_path = out / f"{suite}.json"
    json_path.write_text(json.dumps(result, indent=2, default=_json_default))
    md_path = out / f"{suite}.md"
    md_path.write_text(to_markdown(result))
    return [json_path, md_path]


# --------------------------------------------------------------------------------------------
# speed


def measure_speed(model: str, batch_size: int, steps: int, repeats: int, seed: int = 0) -> dict[str, Any]:
    """Engine vs plain loop, alternating runs in one process; medians of ``repeats`` runs each."""
    import tempfile

    import torch

    from medvlp.data import load_dataset
    from medvlp.eval.features import extract_features
    from medvlp.methods.supervised import SupervisedMethod
    from medvlp.models import create_model
    from medvlp.train.engine import TrainConfig, fit
    from medvlp.utils import resolve_device, seed_everything

    device = resolve_device("auto")
    data = load_dataset("pneumoniamnist")
    train = data.split_view("train")
    n = batch_size * steps
    idx = np.arange(n) % len(train)
    probe_model = create_model(model)
    size = probe_model.img_size
    x_all = torch.from_numpy(train.images[idx]).float().div_(255.0).unsqueeze(1)
    if x_all.shape[-1] != size:
        x_all = torch.nn.functional.interpolate(x_all, size=(size, size), mode="bilinear", antialias=True)
    x_all = (x_all - 0.5) / 0.5
    y_all = torch.from_numpy(train.labels[idx]).long()

    class TensorDictDataset(torch.utils.data.Dataset):
        def __len__(self):
            return n

        def __getitem__(self, i):
            return {"image": x_all[i], "label": y_all[i], "index": i}

    cfg = TrainConfig(epochs=1, batch_size=batch_size, lr=1e-3, weight_decay=0.05, seed=seed, progress=False,
                      log_every=10**9, clip_grad_norm=1.0, precision="fp32")

    def run_engine() -> float:
        seed_everything(seed)
        method = SupervisedMethod(create_model(model), 1, "binary")
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            fit(method, TensorDictDataset(), cfg, tmp)
            return n / (time.perf_counter() - t)

    def run_plain() -> float:
        # The loop a user would write by hand with timm: same model, loss, optimizer, clipping.
        # Like the engine: data on the host, each batch moved to the device, fp32.
        seed_everything(seed)
        backbone = create_model(model).to(device)
        head = torch.nn.Linear(backbone.feature_dim, 1).to(device)
        params = list(backbone.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.05)
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(n, generator=g)
        t = time.perf_counter()
        for s in range(steps):
            b = order[s * batch_size:(s + 1) * batch_size]
            x, y = x_all[b].to(device, non_blocking=True), y_all[b].to(device, non_blocking=True)
            logits = head(backbone.pooled(x)).squeeze(1)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y.float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
        loss.item()  # wait for the device before stopping the clock
        return n / (time.perf_counter() - t)

    run_plain()  # warm-up: first-call allocations and thread-pool start belong to neither side
    engine, plain = [], []
    for _ in range(repeats):
        plain.append(run_plain())
        engine.append(run_engine())
    feats = []
    backbone = create_model(model)
    for _ in range(repeats):
        t = time.perf_counter()
        extract_features(backbone, data.split_view("test"), batch_size=256)
        feats.append(len(data.split_view("test")) / (time.perf_counter() - t))
    e, p = statistics.median(engine), statistics.median(plain)
    return {"model": model, "device": str(device), "batch_size": batch_size, "steps": steps, "repeats": repeats,
            "engine_images_per_s": round(e, 1), "plain_loop_images_per_s": round(p, 1),
            "engine_over_plain": round(e / p, 3), "target_ratio": 0.90, "meets_target": e / p >= 0.90,
            "engine_runs": [round(v, 1) for v in engine], "plain_runs": [round(v, 1) for v in plain],
            "feature_extraction_images_per_s": round(statistics.median(feats), 1),
            "note": "engine time includes its setup and final checkpoint write"}


# --------------------------------------------------------------------------------------------
# quality


def _load_tasks(spec, data_root):
    from medvlp.data import load_dataset

    tasks, skipped = [], {}
    for name in spec["tasks"]:
        try:
            tasks.append(load_dataset(name, root=data_root, **spec["dataset_kwargs"].get(name, {})))
        except (DataError, FileNotFoundError) as e:
            skipped[name] = f"not available here: {e}"
            log.warning("bench: skipping %s (%s)", name, e)
    return tasks, skipped


def measure_quality(spec: dict[str, Any], *, data_root: str | None, work_dir: Path) -> dict[str, Any]:
    from medvlp.eval.finetune import finetune
    from medvlp.eval.protocol import evaluate_backbone
    from medvlp.models import create_model, from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, ModelConfig, PretrainConfig, run_pretrain
    from medvlp.utils import seed_everything

    tasks, skipped = _load_tasks(spec, data_root)
    seeds = tuple(spec["seeds"])
    protocols = tuple(spec["protocols"])
    rows: list[dict[str, Any]] = []

    def probe_rows(label: str, backbone, pretrain_task: str | None, pretrained_note: str):
        usable = [t for t in tasks if t.name != pretrain_task]
        if pretrain_task:
            for t in tasks:
                if t.name == pretrain_task:
                    rows.append({"task": t.name, "method": label, "protocol": "-", "excluded":
                                 "pretraining used this task's labels"})
        rep = evaluate_backbone(backbone, usable, protocols=protocols, seeds=seeds).to_json()
        for name, ds in rep["datasets"].items():
            for proto, p in ds["protocols"].items():
                rows.append({"task": name, "method": label, "protocol": proto, "init": pretrained_note,
                             "summary": p["summary"], "ci95": p["ci95"], "split_hash": ds.get("split_hash")})

    timings: dict[str, float] = {}
    t_stage = time.time()

    def lap(name: str) -> None:
        nonlocal t_stage
        timings[name] = round(time.time() - t_stage, 1)
        log.warning("bench: %s took %.1f s", name, timings[name])
        t_stage = time.time()

    lap("load tasks")
    seed_everything(seeds[0])
    probe_rows("random init (frozen)", create_model(spec["model"]), None, "random")

    cfg = PretrainConfig(data=DataConfig(dataset="nih1000", root=data_root), model=ModelConfig(name=spec["model"]),
                         train=TrainConfig(epochs=spec["pretrain_epochs"], batch_size=64, lr=1e-3, warmup_steps=20,
                                           seed=seeds[0], progress=False),
                         out_dir=str(work_dir / "supervised_nih"))
    lap("random init probes")
    model_dir, _ = run_pretrain(cfg)
    lap("supervised NIH pretraining")
    probe_rows("supervised on NIH-1000 (frozen)", from_pretrained(model_dir), "nih1000", "medvlp supervised")
    lap("supervised NIH probes")

    try:
        probe_rows("ImageNet EfficientNet-Lite0 (frozen)", create_model("efficientnet_lite0_imagenet",
                                                                       pretrained="imagenet"), None, "ImageNet")
    except Exception as e:  # the weights package is an optional extra
        rows.append({"task": "*", "method": "ImageNet EfficientNet-Lite0 (frozen)", "excluded": f"unavailable: {e}"})
    lap("ImageNet probes")

    for t in tasks:
        # Small sets (TCGA-LUAD has 54 training slices) still get several steps per epoch.
        batch = int(min(64, max(8, (t.split == "train").sum() // 4)))
        for s in seeds:
            seed_everything(s)
            res = finetune(create_model(spec["model"]), t, fraction=1.0, seed=s,
                           train_cfg=TrainConfig(epochs=spec["scratch_epochs"], batch_size=batch, lr=1e-3,
                                                 warmup_steps=10, seed=s, progress=False),
                           out_dir=work_dir / f"scratch_{t.name}_{s}")
            rows.append({"task": t.name, "method": "supervised from scratch (fine-tuned)", "protocol": "finetune",
                         "seed": s, "metrics": res["metrics"],
                         "finetune": {k: v for k, v in res.items() if k != "metrics"}})
        lap(f"{t.name} from scratch")
        rows.append(_raw_pixel_row(t, seeds[0]))
        lap(f"{t.name} raw pixels")
    return {"rows": rows, "skipped": skipped, "tasks": [t.describe() for t in tasks], "seconds": timings}


def _raw_pixel_row(t, seed: int) -> dict[str, Any]:
    from medvlp.eval.probe import raw_pixel_probe

    res = raw_pixel_probe(t, seed=seed)
    return {"task": t.name, "method": "raw pixels (28 px), logistic regression", "protocol": "logreg",
            "metrics": res.metrics}


# --------------------------------------------------------------------------------------------
# markdown


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + [
        "| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def to_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [f"# medvlp bench: {result['suite']}", "",
             f"Machine: {m.get('processor')} ({m.get('cpu_count')} cores), torch {m.get('torch')}, "
             f"GPU: {m.get('gpu', 'none')}. Took {result.get('seconds')} s.", ""]
    st = result.get("structuring")
    if st:
        lines += ["## Report structuring (rules labeler)", ""] + _md_table(
            ["reports", "cold reports/s", "cached reports/s", "cache hits", "speed-up"],
            [[st["reports"], f"{st['cold_reports_per_s']:.0f}", f"{st['cached_reports_per_s']:.0f}",
              st["cache_hits"], f"{st['cached_speedup']}x"]]) + [""]
    sp = result.get("speed")
    if sp:
        lines += ["## Speed", ""] + _md_table(
            ["model", "batch", "engine img/s", "plain loop img/s", "ratio", "target", "feature extraction img/s"],
            [[sp["model"], sp["batch_size"], sp["engine_images_per_s"], sp["plain_loop_images_per_s"],
              sp["engine_over_plain"], f">= {sp['target_ratio']}", sp["feature_extraction_images_per_s"]]]) + [""]
    q = result.get("quality")
    if q:
        lines += ["## Quality (test split)", "", "| task | method | protocol | macro-AUC | 95% CI | accuracy |",
                  "|---|---|---|---|---|---|"]
        for r in q["rows"]:
            if "excluded" in r:
                lines.append(f"| {r['task']} | {r['method']} | - | excluded: {r['excluded']} | | |")
                continue
            if "summary" in r:
                auc = r["summary"].get("macro_auc", {})
                acc = r["summary"].get("accuracy", {})
                ci_rec = next(iter((r.get("ci95") or {}).values()), {})
                ci = (ci_rec["lo"], ci_rec["hi"]) if ci_rec.get("metric") == "macro_auc" else None
                auc_s = f"{auc.get('mean', float('nan')):.3f} ± {auc.get('std', 0):.3f}"
                acc_s = f"{acc.get('mean', float('nan')):.3f}"
            else:
                met = r["metrics"]
                auc_s, acc_s, ci = f"{met.get('macro_auc', float('nan')):.3f}", f"{met.get('accuracy', float('nan')):.3f}", None
            ci_s = f"{ci[0]:.3f}–{ci[1]:.3f}" if ci else ""
            lines.append(f"| {r['task']} | {r['method']} | {r.get('protocol', '')} | {auc_s} | {ci_s} | {acc_s} |")
        for name, why in q.get("skipped", {}).items():
            lines.append(f"\nSkipped {name}: {why}")
    return "\n".join(lines) + "\n"


def _json_default(o):
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)
