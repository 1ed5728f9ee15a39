"""``medvlp adapt``: few-shot prompt learning (ViP, CoOp) and zero-shot baselines on a frozen dual
encoder, with best-by-validation selection, a metrics JSON and an HTML report.

The image encoder is frozen, so every image is encoded once and the prompt modules train on the
cached, normalised features; the text tower runs at every step (its input, the context, changes).
Consequence: no image augmentation (ViP's code uses random-resized-crop + flip), documented in
docs/vip.md.

Schedule (Dassl, as ViP's code): SGD (momentum 0.9, weight decay 5e-4), a constant warm-up LR
(1e-5) for ``warmup_epochs``, then ``lr · ½(1 + cos(π e / E))`` at (fractional) epoch ``e`` of
``E``. Model selection: the evaluation with the best validation accuracy; ties (frequent on a
few-shot validation set) go to the lower validation loss, then the earlier evaluation.
The few-shot validation set has ``min(k, val_shots)`` images per class (CoOp's ``min(k, 4)``);
with ``shots="full"`` training and selection use the whole train and val splits.
"""
from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from medvlp.config import StrictConfig, save_config
from medvlp.errors import ConfigError, DataError
from medvlp.methods.vip import VARIANTS, PromptClassifier, build_classifier, probabilities

log = logging.getLogger(__name__)


class PromptOptions(StrictConfig):
    n_ctx: int = 4
    position: Literal["end", "middle", "front"] = "end"
    class_specific: bool = False
    init_std: float = 0.02
    normalize_symptoms: bool = False
    template: str = "a {modality} image showing {name}"


class AdaptData(StrictConfig):
    dataset: str = "pneumoniamnist"
    root: str | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    # Dataset label name -> symptom-file class name; classes not listed are dropped (e.g. HAM10000
    # {"mel": "melanoma", "nv": "nevus"}). Empty: the dataset's own label names, all kept.
    class_map: dict[str, str] = Field(default_factory=dict)
    shots: int | Literal["full"] = 16
    val_shots: int | None = 4      # None: the whole validation split
    shot_seed: int | None = None   # None: the training seed


class AdaptTrain(StrictConfig):
    epochs: int = 50
    batch_size: int = 32
    lr: float = 0.002
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    warmup_lr: float = 1e-5
    max_steps: int | None = None   # caps long (full-data) runs; the cosine is compressed to fit
    evals: int = 50                # validation evaluations spread over the run
    seed: int = 1


class AdaptConfig(StrictConfig):
    encoder: str = Field(..., description="medvlp:<folder>, open_clip:<name[@tag]|folder>, hf-clip:<name|folder>")
    method: str = "vip"
    symptoms: str | None = None    # a symptom JSON or curated name; default: the dataset name
    prompt: PromptOptions = Field(default_factory=PromptOptions)
    data: AdaptData = Field(default_factory=AdaptData)
    train: AdaptTrain = Field(default_factory=AdaptTrain)
    out_dir: str = "runs/adapt"
    report: bool = True


# ---------------------------------------------------------------------------------------------
# data


def task_classes(imageset, symptom_classes: list[str], class_map: dict[str, str]
                 ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(rows kept, labels in symptom-class order, class names)`` for a single-label ImageSet."""
    if imageset.task == "multilabel":
        raise DataError(imageset.source or imageset.name, "multilabel task",
                        "a binary or multiclass dataset for prompt classification")
    mapping = dict(class_map) or {n: n for n in imageset.label_names}
    unknown = [k for k in mapping if k not in imageset.label_names]
    if unknown:
        raise ConfigError(f"data.class_map names {unknown}, not labels of {imageset.name} "
                          f"({imageset.label_names})")
    classes = [c for c in symptom_classes if c in mapping.values()] or list(mapping.values())
    missing = [v for v in mapping.values() if v not in classes]
    if missing:
        raise ConfigError(f"classes {missing} have no entry in the symptom set ({symptom_classes}); "
                          f"set data.class_map to map dataset labels to its classes")
    src = {imageset.label_names.index(k): classes.index(v) for k, v in mapping.items()}
    y = np.asarray(imageset.labels).reshape(len(imageset), -1)[:, 0]
    keep = np.flatnonzero(np.isin(y, list(src)))
    return keep, np.array([src[int(v)] for v in y[keep]], dtype=np.int64), classes


def select_shots(labels: np.ndarray, split: np.ndarray, shots: int | str, val_shots: int | None,
                 seed: int) -> dict[str, np.ndarray]:
    """Row indices of the k-shot train and val sets (from the train / val splits) and of test."""
    from medvlp.data.splits import k_shot

    train_pool, val_pool = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    if shots == "full":  # all labels are available: train and validate on the whole splits
        train, val = train_pool, val_pool
    else:
        train = k_shot(labels, int(shots), seed=seed, pool_idx=train_pool)
        val = val_pool if val_shots is None else _k_or_all(labels, val_pool, min(int(shots), val_shots), seed)
    return {"train": train, "val": val, "test": np.flatnonzero(split == "test")}


def _k_or_all(labels, pool, k, seed):
    from medvlp.data.splits import k_shot

    counts = np.bincount(labels[pool], minlength=labels.max() + 1)
    return k_shot(labels, k, seed=seed, pool_idx=pool) if counts.min() >= k else pool


# ---------------------------------------------------------------------------------------------
# training


def lr_at(epoch: float, cfg: AdaptTrain, total_epochs: float) -> float:
    """Dassl's constant warm-up + cosine, at a fractional epoch."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, epoch / max(total_epochs, 1e-9))))


@torch.no_grad()
def _val_score(model: PromptClassifier, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    p = probabilities(model, x)
    acc = float((p.argmax(1) == y).float().mean())
    return acc, float(F.nll_loss(p.clamp_min(1e-12).log(), y))


def fit_prompts(model: PromptClassifier, train_x: torch.Tensor, train_y: torch.Tensor,
                val_x: torch.Tensor, val_y: torch.Tensor, cfg: AdaptTrain) -> dict[str, Any]:
    """Train the prompt parameters on cached features; restores the best-by-validation state."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("fit_prompts: the classifier has no prompt parameters (a zero-shot variant)")
    g = torch.Generator().manual_seed(cfg.seed)
    n = len(train_x)
    steps_per_epoch = max(1, math.ceil(n / cfg.batch_size))
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total = min(total, cfg.max_steps)
    total_epochs = total / steps_per_epoch
    eval_at = set(np.unique(np.linspace(total / max(1, cfg.evals), total, max(1, cfg.evals)).round().astype(int)))
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    best: tuple[float, float, int] = (-1.0, math.inf, 0)
    best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    history, order, t0 = [], torch.empty(0, dtype=torch.long), time.time()
    model.train()
    for step in range(1, total + 1):
        pos = (step - 1) % steps_per_epoch
        if pos == 0:
            order = torch.randperm(n, generator=g)
        idx = order[pos * cfg.batch_size:(pos + 1) * cfg.batch_size]
        for group in opt.param_groups:
            group["lr"] = lr_at((step - 1) / steps_per_epoch, cfg, total_epochs)
        out = model({"features": train_x[idx], "label": train_y[idx]})
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
        if step in eval_at:
            model.eval()
            acc, loss = _val_score(model, val_x, val_y)
            model.train()
            history.append({"step": step, "epoch": round(step / steps_per_epoch, 3),
                            "train_loss": float(out["loss"].detach()), "val_acc": acc, "val_loss": loss})
            if acc > best[0] or (acc == best[0] and loss < best[1]):
                best = (acc, loss, step)
                best_state = {k: v.detach().clone() for k, v in model.named_parameters() if v.requires_grad}
    with torch.no_grad():
        for k, v in model.named_parameters():
            if k in best_state:
                v.copy_(best_state[k])
    model.eval()
    return {"steps": total, "epochs": round(total_epochs, 3), "best_step": best[2], "best_val_acc": best[0],
            "best_val_loss": best[1], "seconds": round(time.time() - t0, 2), "history": history}


def evaluate(model: PromptClassifier, x: torch.Tensor, y: torch.Tensor) -> dict[str, Any]:
    """Accuracy, macro-F1 (and one-vs-rest AUC) of the argmax / softmax of the cosine logits."""
    from medvlp.eval.metrics import classification_metrics

    p = probabilities(model, x).numpy()
    return classification_metrics(y.numpy(), p, "multiclass", label_names=model.class_names)


def adapt_on_features(variant: str, encoder, class_names: list[str], symptoms: dict[str, list[str]] | None,
                      feats: dict[str, tuple[torch.Tensor, torch.Tensor]], *, modality: str,
                      prompt: PromptOptions, train: AdaptTrain) -> tuple[PromptClassifier, dict[str, Any]]:
    """Build ``variant``, train it when it has prompt parameters, evaluate on ``feats['test']``.

    ``feats``: ``{"train"|"val"|"test": (normalised image features (N, D), labels (N,))}``.
    """
    torch.manual_seed(train.seed)  # prompt initialisation
    opts = prompt.model_dump()
    template = opts.pop("template")
    model = build_classifier(variant, encoder, class_names, symptoms, modality=modality,
                             template=template, **opts)
    fit = fit_prompts(model, *feats["train"], *feats["val"], train) if VARIANTS[variant].trained else None
    result = {"variant": variant, "label": VARIANTS[variant].label, "metrics": evaluate(model, *feats["test"]),
              "val_metrics": evaluate(model, *feats["val"]), "fit": fit,
              "prompt_parameters": model.prompt_parameter_count()}
    return model, result


# ---------------------------------------------------------------------------------------------
# the run


def run_adapt(cfg: AdaptConfig, *, encoder=None) -> dict[str, Any]:
    """Load encoder, data and symptoms; select k shots; train; write metrics JSON + HTML report."""
    from medvlp.data import load_dataset
    from medvlp.knowledge.symptoms import load_symptoms
    from medvlp.models.dual_encoder import load_dual_encoder

    if cfg.method not in VARIANTS:
        raise ConfigError(f"method={cfg.method!r}: expected one of {', '.join(VARIANTS)}")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    sset = load_symptoms(cfg.symptoms or cfg.data.dataset)
    data = load_dataset(cfg.data.dataset, root=cfg.data.root, **cfg.data.options)
    rows, labels, classes = task_classes(data, list(sset.classes), cfg.data.class_map)
    data = data.subset(np.isin(np.arange(len(data)), rows))
    encoder = encoder or load_dual_encoder(cfg.encoder)
    t0 = time.time()
    x = torch.from_numpy(encoder.image_features(data))
    feat_seconds = time.time() - t0
    seed = cfg.data.shot_seed if cfg.data.shot_seed is not None else cfg.train.seed
    idx = select_shots(labels, np.asarray(data.split), cfg.data.shots, cfg.data.val_shots, seed)
    y = torch.from_numpy(labels)
    feats = {k: (x[v], y[v]) for k, v in idx.items()}
    model, result = adapt_on_features(cfg.method, encoder, classes, sset.classes, feats,
                                      modality=sset.modality, prompt=cfg.prompt, train=cfg.train)
    result.update({
        "dataset": data.name, "classes": classes, "shots": cfg.data.shots,
        "n": {k: int(len(v)) for k, v in idx.items()}, "feature_seconds": round(feat_seconds, 2),
        "symptoms": {"source": sset.source, "version": sset.version, "task": sset.task},
        "parts_used": {**encoder.parts_used, "symptoms": f"{sset.task} ({sset.source}, v{sset.version})"},
        "merge_weights": model.merge_table(),
    })
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    from safetensors.torch import save_file

    prompts = {k: v.detach().cpu().contiguous() for k, v in model.named_parameters() if v.requires_grad}
    if prompts:
        save_file(prompts, str(out / "prompts.safetensors"))
    if cfg.report:
        write_report(out / "report.html", cfg, result)
    return result


def write_report(path: Path, cfg: AdaptConfig, result: dict[str, Any]) -> Path:
    """HTML: what was used, test metrics, and per class its texts with their learned merge weights."""
    from medvlp.eval.report import TableSection, TextSection, write_html_report

    m = result["metrics"]
    summary = [{"method": result["label"], "dataset": result["dataset"], "shots": result["shots"],
                "accuracy": m["accuracy"], "macro_f1": m["macro_f1"], "macro_auc": m["macro_auc"],
                "n_test": m["n"], "prompt parameters": result["prompt_parameters"]}]
    parts = [{"part": k, "used": v} for k, v in result["parts_used"].items()]
    sections = [TableSection("Test metrics", summary), TableSection("Parts used", parts),
                TableSection("Symptoms and learned merge weights, per class", result["merge_weights"])]
    fit = result.get("fit")
    if fit:
        sections.append(TextSection("Training", f"{fit['steps']} steps ({fit['epochs']} epochs) in "
                                    f"{fit['seconds']} s; selected step {fit['best_step']} "
                                    f"(validation accuracy {fit['best_val_acc']:.4f})."))
        sections.append(TableSection("Validation curve", fit["history"]))
    return write_html_report(path, title=f"medvlp adapt: {result['label']} on {result['dataset']}",
                             sections=sections)
