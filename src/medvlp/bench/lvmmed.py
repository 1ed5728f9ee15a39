"""LVM-Med suites (``lvmmed_quick``, ``lvmmed``): graph matching vs SimCLR vs random init.

Every arm pretrains the same backbone from the same random init on the same multi-modality
collection (train splits only) with the same two-view augmentation, optimizer, batch and steps,
then goes through the shared probe (``bench.common.probe_rows``: PROBE_TASKS, logreg, seeds) like
the baselines. Arms: LVM-Med (full), SimCLR, random init, and the four ablations of the paper's
Table 6 (no second-order term, no message passing, no Gumbel noise, no local similarity). Each
pretraining arm records its loss curve (first/last window means) and time; the full suite adds
fine-tuning rows (``eval.finetune``) and, when ``eval/segmentation.py`` exists, segmentation transfer.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path
from typing import Any

from medvlp.bench.common import PROBE_TASKS, load_tasks, md_table, probe_rows, quality_markdown

log = logging.getLogger(__name__)

ABLATIONS = {
    "no second-order term": {"second_order": False},
    "no message passing": {"message_passing": False},
    "no Gumbel noise": {"gumbel_noise": False},
    "no local similarity": {"local_similarity": False},
}

SUITES: dict[str, dict[str, Any]] = {
    "lvmmed_quick": {
        "tasks": PROBE_TASKS, "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "resnet18_28", "steps": 40, "batch_size": 32, "lr": 1e-3,
        "collection": {"ham_limit": 1000, "graph_size": 16, "knn": 5},
        "ablations": list(ABLATIONS), "protocols": ["logreg"], "seeds": [0],
        "finetune": [], "segmentation": True,
    },
    "lvmmed": {
        "tasks": PROBE_TASKS, "dataset_kwargs": {"ham10000": {"limit": 2000}},
        "model": "resnet18_28", "steps": 120, "batch_size": 64, "lr": 1e-3,
        "collection": {"ham_limit": 2000, "graph_size": 16, "knn": 5},
        "ablations": list(ABLATIONS), "protocols": ["logreg"], "seeds": [0, 1, 2],
        "finetune": ["breastmnist"], "segmentation": True,
    },
}


def _pretrain(spec: dict[str, Any], method: str, options: dict[str, Any], out: Path, data_root) -> tuple[Path, dict]:
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    coll = spec["collection"]
    opts = {"ham_limit": coll["ham_limit"], **options}
    if method == "lvmmed":
        opts = {"graph_size": coll["graph_size"], "knn": coll["knn"], **opts}
    # data.dataset is loaded by run_pretrain but unused: the methods build the collection.
    cfg = PretrainConfig(data=DataConfig(dataset="breastmnist", root=data_root), model=ModelConfig(name=spec["model"]),
                         method=MethodConfig(name=method, options=opts),
                         train=TrainConfig(max_steps=spec["steps"], batch_size=spec["batch_size"], lr=spec["lr"],
                                           weight_decay=0.0, warmup_steps=max(1, spec["steps"] // 10), seed=0,
                                           log_every=max(1, spec["steps"] // 8), progress=False),
                         out_dir=str(out))
    t = time.time()
    model_dir, result = run_pretrain(cfg)
    losses = [r["loss"] for r in result.history if "loss" in r]
    accs = [r["match_acc"] for r in result.history if "match_acc" in r]
    return model_dir, {"seconds": round(time.time() - t, 1), "steps": result.steps,
                       "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                       "first_match_acc": accs[0] if accs else None, "last_match_acc": accs[-1] if accs else None,
                       "loss_curve": losses}


def run(spec: dict[str, Any], out: Path, data_root: str | None) -> dict[str, Any]:
    from medvlp.models import create_model, from_pretrained
    from medvlp.utils import seed_everything

    work = out / f".{spec['name']}_work"
    tasks, skipped = load_tasks(spec["tasks"], data_root, spec["dataset_kwargs"])
    kw = {"protocols": tuple(spec["protocols"]), "seeds": tuple(spec["seeds"])}
    rows: list[dict[str, Any]] = []
    training: dict[str, dict[str, Any]] = {}
    backbones: dict[str, Any] = {}

    seed_everything(0)
    backbones["random init (frozen)"] = create_model(spec["model"])
    rows += probe_rows("random init (frozen)", backbones["random init (frozen)"], tasks, init="random", **kw)

    arms = [("LVM-Med (frozen)", "lvmmed", {}), ("SimCLR (frozen)", "simclr", {})]
    arms += [(f"LVM-Med, {a} (frozen)", "lvmmed", ABLATIONS[a]) for a in spec["ablations"]]
    for label, method, options in arms:
        model_dir, info = _pretrain(spec, method, options, work / label.split(" (")[0].replace(" ", "_").replace(",", ""),
                                    data_root)
        training[label] = {"method": method, "options": options, **info}
        log.warning("bench lvmmed: %s pretrained in %.0f s, loss %s -> %s", label, info["seconds"],
                    info["first_loss"], info["last_loss"])
        backbones[label] = from_pretrained(model_dir)
        rows += probe_rows(label, backbones[label], tasks, init=f"medvlp {method}", **kw)

    result: dict[str, Any] = {"quality": rows, "skipped": skipped, "training": training}
    if spec.get("finetune"):
        result["finetune"] = _finetune_rows(spec, backbones, tasks, work)
    if spec.get("segmentation"):
        result["segmentation"] = _segmentation_rows(backbones, data_root)
    return result


def _finetune_rows(spec, backbones, tasks, work: Path) -> list[dict[str, Any]]:
    import copy

    from medvlp.eval.finetune import finetune
    from medvlp.train.engine import TrainConfig

    rows = []
    for task in [t for t in tasks if t.name in spec["finetune"]]:
        for label in ("random init (frozen)", "LVM-Med (frozen)", "SimCLR (frozen)"):
            cfg = TrainConfig(epochs=5, batch_size=64, lr=1e-3, seed=0, progress=False)
            res = finetune(copy.deepcopy(backbones[label]), task, fraction=1.0, seed=0, train_cfg=cfg,
                           out_dir=work / f"ft_{task.name}_{len(rows)}")
            rows.append({"task": task.name, "method": label.replace("(frozen)", "(fine-tuned)"), "protocol": "finetune",
                         "metrics": res["metrics"], "best_epoch": res["best_epoch"]})
    return rows


def _segmentation_rows(backbones, data_root, epochs: int = 8) -> dict[str, Any]:
    if importlib.util.find_spec("medvlp.eval.segmentation") is None:
        return {"skipped": "medvlp.eval.segmentation is not available in this checkout"}
    from medvlp.data import load_dataset
    from medvlp.eval.segmentation import segmentation_transfer

    # HAM10000's lesion-wise split does not depend on ``limit``: these test lesions were never in the
    # collection (train splits only).
    data = load_dataset("ham10000", root=data_root, limit=600, with_masks=True)
    return {label: _seg_summary(segmentation_transfer(bb, data, freeze_encoder=True, seed=0, epochs=epochs))
            for label, bb in backbones.items()}


def _seg_summary(res: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in res.items() if k in ("dice", "iou", "best_epoch", "n_train", "n_test")}


def markdown(result: dict[str, Any]) -> list[str]:
    cfg = result["config"]
    lines = [f"2-core CPU run (shared machine). Backbone {cfg['model']}, random init; every arm pretrained "
             f"{cfg['steps']} steps x {cfg['batch_size']} image pairs on the multi-modality collection "
             "(train splits of PneumoniaMNIST, NIH-1000, BreastMNIST, HAM10000, TCGA-LUAD + TotalSegmentator CT "
             "slices, modality-balanced), then the shared logreg probe on the test splits. "
             "This is a tiny-scale run of a method the paper trains for 100 epochs on 1.3M images: "
             "read the differences against the confidence intervals.", "", "## Pretraining", ""]
    trows = []
    for label, t in result["training"].items():
        fmt = (lambda v: "" if v is None else f"{v:.3f}")
        trows.append([label.replace(" (frozen)", ""), t["steps"], fmt(t["first_loss"]), fmt(t["last_loss"]),
                      fmt(t["first_match_acc"]), fmt(t["last_match_acc"]), t["seconds"]])
    lines += md_table(["arm", "steps", "first loss", "last loss", "first match acc", "last match acc", "seconds"],
                      trows)
    lines += ["", "Loss: LVM-Med arms the Hamming graph-matching loss per node (0 = every view matched to its "
              "partner); SimCLR NT-Xent. Match acc: fraction of nodes matched to their partner view.", "",
              "## Probes (test split)", ""]
    lines += quality_markdown(result["quality"], result.get("skipped"))
    if result.get("finetune"):
        lines += ["", "## Fine-tuning", ""] + quality_markdown(result["finetune"])
    seg = result.get("segmentation")
    if seg and "skipped" in seg:
        lines += ["", f"Segmentation transfer skipped: {seg['skipped']}"]
    elif seg:
        lines += ["", "## Segmentation transfer (HAM10000 lesion masks, frozen encoder + U-Net decoder, "
                  "eval.segmentation, 600 images, 8 epochs, test split)", ""]
        lines += md_table(["backbone", "Dice", "IoU", "best epoch"],
                          [[k.replace(" (frozen)", ""), f"{v['dice']:.3f}", f"{v['iou']:.3f}", v["best_epoch"]]
                           for k, v in seg.items()])
    return lines
