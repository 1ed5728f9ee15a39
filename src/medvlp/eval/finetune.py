"""End-to-end fine-tuning with a label fraction: the protocol for "how much labelled data does a
pretrained backbone save?".

A copy of the backbone plus a linear head (:class:`~medvlp.methods.supervised.SupervisedMethod`)
is trained with the shared engine on a stratified ``fraction`` of the train split
(:func:`medvlp.data.splits.label_fraction`, at least one image per class). The model is scored
on the val split at the end of every epoch; the weights of the epoch with the best val
macro-AUC (the earliest on a tie) are restored and scored on the test split. Test labels play
no part in any choice.

Training uses the evaluation preprocessing (no augmentation) so that the comparison between
backbones depends only on their weights. Single process only (the per-epoch evaluation hooks
into the engine's logging, which runs on the main rank).
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvlp.data.imageset import ImageSet
from medvlp.data.splits import label_fraction
from medvlp.data.torch_dataset import TorchImageDataset
from medvlp.data.transforms import Preprocess
from medvlp.eval.metrics import classification_metrics
from medvlp.eval.probe import val_selection_score
from medvlp.methods.supervised import SupervisedMethod
from medvlp.models.backbone import Backbone
from medvlp.train.engine import TrainConfig, fit
from medvlp.utils import stable_hash


def predict_scores(method: SupervisedMethod, imageset: ImageSet, preprocess: Preprocess,
                   batch_size: int = 256) -> np.ndarray:
    """Probabilities of ``method`` on every image: sigmoid (binary (N,), multilabel (N, C)) or
    softmax (multiclass (N, C)).

    Batches are built without a DataLoader on purpose: creating a DataLoader iterator draws from
    the global torch RNG, and this runs in the middle of training, whose RNG stream must stay
    exactly that of a run without evaluation.
    """
    device = next(method.parameters()).device
    was_training = method.training
    method.eval()
    chunks = []
    try:
        with torch.inference_mode():
            for start in range(0, len(imageset), batch_size):
                x = torch.stack([preprocess(img) for img in
                                 imageset.images[start:start + batch_size]]).to(device)
                chunks.append(method.predict(x).float().cpu())
    finally:
        method.train(was_training)
    logits = torch.cat(chunks)
    if method.task == "binary":
        return torch.sigmoid(logits[:, 0]).numpy().astype(np.float64)
    if method.task == "multiclass":
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)
    return torch.sigmoid(logits).numpy().astype(np.float64)


def finetune(backbone: Backbone, imageset: ImageSet, *, fraction: float = 1.0, seed: int = 0,
             train_cfg: TrainConfig | None = None, out_dir: str | Path) -> dict[str, Any]:
    """Fine-tune a copy of ``backbone`` on ``fraction`` of the train labels; report test metrics
    of the best-val epoch.

    ``train_cfg.seed`` and ``log_every`` are overridden (by ``seed`` and one epoch) and
    ``train_cfg.max_steps`` must be unset: the protocol counts epochs. ``out_dir`` receives the
    engine's metrics log, config and final checkpoint (the *last* epoch's weights; the returned
    metrics are those of the best epoch). The input ``backbone`` is not modified.

    Returns a JSON-serialisable dict: fraction, seed, n_train, train_index_hash, best_epoch,
    val_history ([{epoch, macro_auc}]), val_metrics, metrics (test).
    """
    cfg = train_cfg or TrainConfig()
    if cfg.max_steps is not None:
        raise ValueError("finetune counts epochs: leave train_cfg.max_steps unset")
    for split in ("train", "val", "test"):
        if not np.any(imageset.split == split):
            raise ValueError(f"{imageset.name}: the {split} split is empty")
    train_idx = label_fraction(imageset.labels, fraction, seed=seed,
                               pool_idx=np.flatnonzero(imageset.split == "train"))
    train_set, val_set = imageset.subset(train_idx), imageset.split_view("val")
    test_set = imageset.split_view("test")
    steps_per_epoch = len(train_set) // cfg.batch_size // cfg.grad_accum
    if steps_per_epoch == 0:
        raise ValueError(f"{imageset.name}: {len(train_set)} train images at fraction {fraction} "
                         f"do not fill one step of batch_size {cfg.batch_size}; lower it")
    # One log record per epoch end: the engine's logging call is our per-epoch evaluation hook.
    cfg = cfg.model_copy(update={"seed": seed, "log_every": steps_per_epoch})

    preprocess = Preprocess.from_dict(backbone.preprocess, is_3d=imageset.is_3d)
    method = SupervisedMethod(copy.deepcopy(backbone), imageset.num_outputs, imageset.task)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"score": -np.inf, "state": None, "epoch": None, "metrics": None}

    def evaluate_epoch(record: dict[str, Any]) -> None:
        val_metrics = classification_metrics(val_set.labels,
                                             predict_scores(method, val_set, preprocess),
                                             imageset.task, imageset.label_names)
        epoch = round(record["epoch"], 6)
        history.append({"epoch": epoch, "macro_auc": val_metrics["macro_auc"]})
        if best["state"] is None or val_selection_score(val_metrics) > best["score"]:
            best.update(score=val_selection_score(val_metrics), epoch=epoch, metrics=val_metrics,
                        state={k: v.detach().clone() for k, v in method.state_dict().items()})

    dataset = TorchImageDataset(train_set, preprocess)
    fit(method, dataset, cfg, out_dir, on_log=evaluate_epoch)
    method.load_state_dict(best["state"])
    test_metrics = classification_metrics(test_set.labels,
                                          predict_scores(method, test_set, preprocess),
                                          imageset.task, imageset.label_names)
    return {
        "fraction": fraction, "seed": seed, "n_train": int(len(train_set)),
        "train_index_hash": stable_hash(np.asarray(train_idx, dtype=np.int64)),
        "best_epoch": best["epoch"], "val_history": history, "val_metrics": best["metrics"],
        "metrics": test_metrics,
    }
