"""Segmentation transfer suites (``segmentation_quick``, ``segmentation``).

Every encoder gets the same U-Net decoder (:mod:`medvlp.eval.segmentation`), the same mask sets,
splits, label fractions (1 / 10 / 100 % of the train masks) and seeds, with the encoder **frozen**
(the G2D / MGCA protocol the M-FLAG paper cites for its 1 / 10 / 100 % SIIM and RSNA tables).

All compared encoders are one architecture: **EfficientNet-Lite0** (timm ``tf_efficientnet_lite0``,
a CNN with strides 2..32), because it is the only model with ImageNet weights available offline.
Random init and every pretraining run start from the same architecture with random weights
(registry name ``efficientnet_lite0``: the ImageNet config with no default weights).
The ImageNet weights were trained at 224 px; at the quick suite's 64 px the deepest map is 2x2 and
the features sit far from their design scale, which the markdown says beside the numbers.

Method encoders (M-FLAG, LVM-Med, VIVID) are pretrained on NIH-1000 through ``run_pretrain``
exactly as ``medvlp pretrain --method <name>`` would; a method whose module is not importable is
listed as skipped with the reason, and one whose pretraining fails is listed with its error.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from medvlp.bench.common import md_table

log = logging.getLogger(__name__)

FAMILY = "efficientnet_lite0"
IMAGENET = "efficientnet_lite0_imagenet"
METHODS = {"mflag": "M-FLAG", "lvmmed": "LVM-Med", "vivid": "VIVID"}

SUITES: dict[str, dict[str, Any]] = {
    "segmentation_quick": {
        "datasets": {"cxr_lung_seg": {}, "busi": {}},
        "img_size": 64, "fractions": [0.01, 0.1, 1.0], "seeds": [0, 1], "seeds_at_100": [0],
        "epochs": 8, "batch_size": 16, "decoder_width": 64, "freeze_encoder": True,
        "pretrain_steps": 60, "pretrain_batch_size": 32, "methods": list(METHODS), "method_options": {},
    },
    "segmentation": {
        "datasets": {"cxr_lung_seg": {}, "busi": {}, "ham10000_seg": {"limit": 2000},
                     "totalseg_slices": {}},
        "img_size": 128, "fractions": [0.01, 0.1, 1.0], "seeds": [0, 1, 2], "seeds_at_100": [0, 1, 2],
        "epochs": 40, "batch_size": 16, "decoder_width": 96, "freeze_encoder": True,
        "pretrain_steps": 1000, "pretrain_batch_size": 64, "methods": list(METHODS), "method_options": {},
    },
}


def _pretrain(method: str, spec: dict[str, Any], data_root, work: Path):
    from medvlp.models import from_pretrained
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    cfg = PretrainConfig(
        data=DataConfig(dataset="nih1000", root=data_root),
        model=ModelConfig(name=FAMILY, img_size=spec["img_size"]),
        method=MethodConfig(name=method, options=spec["method_options"].get(method, {})),
        # One step budget for every pretrained encoder: methods differ in what an "epoch" is
        # (LVM-Med's multi-modality stream is 20x NIH-1000), steps and batch are comparable.
        train=TrainConfig(max_steps=spec["pretrain_steps"], batch_size=spec["pretrain_batch_size"],
                          lr=1e-3, warmup_steps=min(20, spec["pretrain_steps"] // 5), seed=0,
                          progress=False),
        out_dir=str(work / f"pretrain_{method}"))
    model_dir, result = run_pretrain(cfg)
    return from_pretrained(model_dir), {"model_dir": str(model_dir), "steps": result.steps,
                                        "final": result.final}


def _encoders(spec: dict[str, Any], data_root, work: Path):
    """Yield ``(label, backbone | None, info)``; backbone None = skipped/failed, info says why."""
    from medvlp.models import create_model
    from medvlp.utils import seed_everything

    size = spec["img_size"]
    seed_everything(0)  # random init weights come from the global RNG: fix them
    yield "random init", create_model(FAMILY, pretrained=False, img_size=size), {"init": "random (seed 0)"}
    try:
        bb, info = _pretrain("supervised", spec, data_root, work)
        yield "supervised on NIH-1000", bb, {"init": "medvlp supervised (14 NIH labels)", **info}
    except Exception as e:  # noqa: BLE001 - reported as a failed row, never dropped
        yield "supervised on NIH-1000", None, {"failed": f"{type(e).__name__}: {e}"}
    try:
        bb = create_model(IMAGENET, pretrained="imagenet", img_size=size)
        yield "ImageNet", bb, {"init": bb.metadata.get("initial_weights"),
                               "note": f"ImageNet weights designed for 224 px, used at {size} px"}
    except Exception as e:  # noqa: BLE001 - the weights package is an optional extra
        yield "ImageNet", None, {"failed": f"{type(e).__name__}: {e}"}
    for method in spec["methods"]:
        label = METHODS.get(method, method)
        if importlib.util.find_spec(f"medvlp.methods.{method}") is None:
            yield label, None, {"skipped": f"medvlp.methods.{method} is not importable (not built yet)"}
            continue
        try:
            bb, info = _pretrain(method, spec, data_root, work)
            yield label, bb, {"init": f"medvlp {method} on NIH-1000", **info}
        except Exception as e:  # noqa: BLE001
            log.exception("segmentation bench: %s pretraining failed", method)
            yield label, None, {"failed": f"{type(e).__name__}: {e}"}


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    from medvlp.data.segmentation import load_segmentation
    from medvlp.data.transforms import Preprocess
    from medvlp.errors import DataError
    from medvlp.eval.segmentation import prepare_arrays, segmentation_transfer

    work = out / f".{spec.get('name', 'segmentation')}_work"
    datasets, skipped_data = {}, {}
    for name, kw in spec["datasets"].items():
        try:
            datasets[name] = load_segmentation(name, root=data_root, **kw)
        except (DataError, FileNotFoundError) as e:
            skipped_data[name] = f"not available here: {e}"
    rows: list[dict[str, Any]] = []
    encoders: dict[str, dict[str, Any]] = {}
    prepared: dict[tuple, Any] = {}
    timings: dict[str, float] = {}
    for label, backbone, info in _encoders(spec, data_root, work):
        encoders[label] = info
        if backbone is None:
            continue
        t0 = time.time()
        pp = dict(backbone.preprocess, img_size=spec["img_size"])
        for dname, data in datasets.items():
            key = (dname, str(sorted(pp.items())))
            if key not in prepared:
                prepared[key] = prepare_arrays(data, Preprocess.from_dict(pp))
            for fraction in spec["fractions"]:
                seeds = spec["seeds_at_100"] if fraction >= 1.0 else spec["seeds"]
                for seed in seeds:
                    r = segmentation_transfer(
                        backbone, data, fraction=fraction, seed=seed, epochs=spec["epochs"],
                        freeze_encoder=spec["freeze_encoder"], img_size=spec["img_size"],
                        batch_size=spec["batch_size"], decoder_width=spec["decoder_width"],
                        prepared=prepared[key])
                    rows.append({"encoder": label, "dataset": dname, "fraction": fraction, "seed": seed,
                                 "dice": r["dice"], "iou": r["iou"], "pooled_dice": r["test"]["pooled_dice"],
                                 "dice_per_class": r["test"]["dice_per_class"], "val_dice": r["val"]["dice"],
                                 "best_epoch": r["best_epoch"], "n_train": r["n_train"],
                                 "train_index_hash": r["train_index_hash"], "seconds": r["seconds"]})
        timings[label] = round(time.time() - t0, 1)
        log.warning("segmentation bench: %s took %.1f s", label, timings[label])
    summary = summarize(rows)
    return {"rows": rows, "summary": summary, "encoders": encoders, "skipped_datasets": skipped_data,
            "datasets": {k: d.describe() + f"; split: {d.meta.get('split_source')}" for k, d in datasets.items()},
            "claims": claims(summary, encoders), "architecture": f"{FAMILY} / {IMAGENET} (EfficientNet-Lite0)",
            "seconds_per_encoder": timings}


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """``{dataset: {encoder: {fraction: {dice_mean, dice_std, iou_mean, n}}}}`` over seeds."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["dataset"], {}).setdefault(r["encoder"], {}).setdefault(str(r["fraction"]), [])
        out[r["dataset"]][r["encoder"]][str(r["fraction"])].append(r)
    for d in out.values():
        for enc, by_f in d.items():
            for f, rs in by_f.items():
                dice = [x["dice"] for x in rs if x["dice"] is not None]
                iou = [x["iou"] for x in rs if x["iou"] is not None]
                by_f[f] = {"dice_mean": float(np.mean(dice)) if dice else None,
                           "dice_std": float(np.std(dice)) if dice else None,
                           "iou_mean": float(np.mean(iou)) if iou else None, "n": len(dice)}
    return out


def claims(summary, encoders) -> list[dict[str, Any]]:
    """M-FLAG's "1 % of labels beats ImageNet at 100 %", per data set, for every encoder.

    Holds when the encoder's mean test Dice at 1 % exceeds ImageNet's at 100 %; with 1-3 seeds
    and test sets of 140-195 images this is a point comparison, not a significance test.
    """
    out = []
    for dname, encs in summary.items():
        ref = encs.get("ImageNet", {}).get("1.0", {}).get("dice_mean")
        for enc, by_f in encs.items():
            if enc == "ImageNet":
                continue
            low = by_f.get("0.01", {}).get("dice_mean")
            out.append({"dataset": dname, "encoder": enc, "dice_1pct": low, "imagenet_dice_100pct": ref,
                        "holds": None if low is None or ref is None else bool(low > ref)})
    if "M-FLAG" not in {c["encoder"] for c in out}:
        why = encoders.get("M-FLAG", {})
        out.append({"dataset": "*", "encoder": "M-FLAG", "holds": None,
                    "why_untested": why.get("skipped") or why.get("failed") or "not in this suite"})
    return out


def _fmt(s: dict[str, Any] | None) -> str:
    if not s or s.get("dice_mean") is None:
        return "-"
    return f"{s['dice_mean']:.3f}" + (f" ± {s['dice_std']:.3f}" if s["n"] > 1 else "") + f" (n={s['n']})"


def markdown(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    m = result.get("machine", {})
    where = f"Run on {m['gpu']}" if m.get("gpu") else f"{m.get('cpu_count', 2)}-core CPU run"
    lines = ["## Segmentation transfer (test Dice, mean foreground, per image)", "",
             f"{where}. U-Net decoder on the frozen encoder's multi-scale features "
             f"(`forward_intermediates`), Dice + cross-entropy, {cfg['epochs']} epochs, best-val-Dice "
             f"epoch scored on the test split; images and masks at {cfg['img_size']} px; label "
             f"fractions of the train split {cfg['fractions']}; seeds {cfg['seeds']} "
             f"({cfg['seeds_at_100']} at 100 %); mean ± std over seeds, n = runs.",
             f"Encoders: one architecture, {result['architecture']}. The ImageNet weights were made "
             f"for 224 px input; at {cfg['img_size']} px they run far from that scale.", ""]
    for dname, desc in result.get("datasets", {}).items():
        lines.append(f"- `{dname}`: {desc}")
    lines.append("")
    for dname, encs in result["summary"].items():
        fr = [str(f) for f in cfg["fractions"]]
        lines += [f"### {dname}", ""] + md_table(
            ["encoder"] + [f"Dice @ {float(f) * 100:g} %" for f in fr],
            [[enc] + [_fmt(by_f.get(f)) for f in fr] for enc, by_f in encs.items()]) + [""]
    lines += ["### Encoders not evaluated", ""]
    missing = [(k, v.get("skipped") or v.get("failed")) for k, v in result["encoders"].items()
               if "skipped" in v or "failed" in v]
    lines += [f"- {k}: {why}" for k, why in missing] or ["- none"]
    for name, why in result.get("skipped_datasets", {}).items():
        lines.append(f"- data set {name}: {why}")
    lines += ["", "### Claim: \"1 % of the labels beats ImageNet at 100 %\" (M-FLAG)", "",
              "Holds when an encoder's mean test Dice with 1 % of the train masks is above the "
              "ImageNet encoder's with 100 %; a point comparison on 1-3 seeds, not a significance test.", ""]
    rows = []
    for c in result["claims"]:
        if "why_untested" in c:
            rows.append([c["dataset"], c["encoder"], "-", "-", f"not tested: {c['why_untested']}"])
            continue
        verdict = {True: "holds", False: "does not hold", None: "not measurable"}[c["holds"]]
        f = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        rows.append([c["dataset"], c["encoder"], f(c["dice_1pct"]), f(c["imagenet_dice_100pct"]), verdict])
    lines += md_table(["data set", "encoder", "Dice @ 1 %", "ImageNet Dice @ 100 %", "claim"], rows)
    return lines
