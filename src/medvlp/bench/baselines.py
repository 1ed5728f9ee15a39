"""Baseline suites (``quick``, ``full``, ``structuring``): the rows every method is compared with.

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

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvlp.bench.common import PROBE_TASKS, load_tasks, md_table, probe_rows, quality_markdown

log = logging.getLogger(__name__)

SUITES: dict[str, dict[str, Any]] = {
    "quick": {
        "tasks": PROBE_TASKS,
        "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "vit_tiny_p4_28",
        "pretrain_epochs": 15,
        "scratch_epochs": 5,
        "protocols": ["logreg"],
        "seeds": [0],
        "speed": {"model": "vit_tiny_p4_28", "batch_size": 64, "steps": 40, "repeats": 3},
    },
    "full": {
        "tasks": PROBE_TASKS,
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


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    parts = spec.get("parts", ["quality", "speed"])
    result: dict[str, Any] = {}
    if "structuring" in parts:
        from medvlp.knowledge.structure import benchmark_structuring

        result["structuring"] = benchmark_structuring()
    if "speed" in parts:
        result["speed"] = measure_speed(**spec["speed"])
    if "quality" in parts:
        result["quality"] = measure_quality(spec, data_root=data_root, work_dir=out / f".{spec['name']}_work")
    return result


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


def measure_quality(spec: dict[str, Any], *, data_root: str | None, work_dir: Path) -> dict[str, Any]:
    from medvlp.eval.finetune import finetune
    from medvlp.models import create_model, from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, ModelConfig, PretrainConfig, run_pretrain
    from medvlp.utils import seed_everything

    tasks, skipped = load_tasks(spec["tasks"], data_root, spec["dataset_kwargs"])
    seeds = tuple(spec["seeds"])
    protocols = tuple(spec["protocols"])
    rows: list[dict[str, Any]] = []

    def add_probe_rows(label: str, backbone, pretrain_task: str | None, init: str):
        excluded = {pretrain_task: "pretraining used this task's labels"} if pretrain_task else {}
        rows.extend(probe_rows(label, backbone, tasks, protocols=protocols, seeds=seeds, excluded=excluded,
                               init=init))

    timings: dict[str, float] = {}
    t_stage = time.time()

    def lap(name: str) -> None:
        nonlocal t_stage
        timings[name] = round(time.time() - t_stage, 1)
        log.warning("bench: %s took %.1f s", name, timings[name])
        t_stage = time.time()

    lap("load tasks")
    seed_everything(seeds[0])
    add_probe_rows("random init (frozen)", create_model(spec["model"]), None, "random")

    cfg = PretrainConfig(data=DataConfig(dataset="nih1000", root=data_root), model=ModelConfig(name=spec["model"]),
                         train=TrainConfig(epochs=spec["pretrain_epochs"], batch_size=64, lr=1e-3, warmup_steps=20,
                                           seed=seeds[0], progress=False),
                         out_dir=str(work_dir / "supervised_nih"))
    lap("random init probes")
    model_dir, _ = run_pretrain(cfg)
    lap("supervised NIH pretraining")
    add_probe_rows("supervised on NIH-1000 (frozen)", from_pretrained(model_dir), "nih1000", "medvlp supervised")
    lap("supervised NIH probes")

    try:
        add_probe_rows("ImageNet EfficientNet-Lite0 (frozen)", create_model("efficientnet_lite0_imagenet",
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


def markdown(result: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    st = result.get("structuring")
    if st:
        lines += ["## Report structuring (rules labeler)", ""] + md_table(
            ["reports", "cold reports/s", "cached reports/s", "cache hits", "speed-up"],
            [[st["reports"], f"{st['cold_reports_per_s']:.0f}", f"{st['cached_reports_per_s']:.0f}",
              st["cache_hits"], f"{st['cached_speedup']}x"]]) + [""]
    sp = result.get("speed")
    if sp:
        lines += ["## Speed", ""] + md_table(
            ["model", "batch", "engine img/s", "plain loop img/s", "ratio", "target", "feature extraction img/s"],
            [[sp["model"], sp["batch_size"], sp["engine_images_per_s"], sp["plain_loop_images_per_s"],
              sp["engine_over_plain"], f">= {sp['target_ratio']}", sp["feature_extraction_images_per_s"]]]) + [""]
    q = result.get("quality")
    if q:
        lines += ["## Quality (test split)", ""] + quality_markdown(q["rows"], q.get("skipped"))
    return lines
