"""Linear probes on frozen features: sklearn logistic regression and a torch linear head.

Both standardise features with statistics of the train split only, pick their hyper-parameter
(C, or the epoch) by macro-AUC on the val split, and report metrics on the test split. Test labels
are never looked at before the choice is made.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from medvlp.eval.metrics import classification_metrics

SplitData = tuple[np.ndarray, np.ndarray]


@dataclass
class ProbeResult:
    """Outcome of one probe: test metrics, val metrics of the chosen setting, test scores
    (probabilities; (N,) binary, (N, C) otherwise), the chosen hyper-parameters and the protocol.
    """

    metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    test_scores: np.ndarray
    chosen: dict[str, Any]
    protocol: str
    notes: list[str] = field(default_factory=list)


def check_splits(train: SplitData, val: SplitData, test: SplitData, task: str) -> None:
    """Raise a clear error for mismatched widths or lengths, an empty split, or a train split
    with a single class (binary / multiclass)."""
    dims = {name: np.asarray(x).shape for name, (x, _) in
            (("train", train), ("val", val), ("test", test))}
    if any(len(d) != 2 for d in dims.values()) or len({d[1] for d in dims.values()}) != 1:
        raise ValueError(f"features must be (N, D) with one D for all splits, got {dims}")
    for name, (x, y) in (("train", train), ("val", val), ("test", test)):
        if len(x) != len(y):
            raise ValueError(f"{name}: {len(x)} feature rows but {len(y)} labels")
        if len(x) == 0:
            raise ValueError(f"{name}: split is empty")
    if task != "multilabel" and len(np.unique(as_labels(train[1], task))) < 2:
        raise ValueError("train split holds a single class: nothing to learn")


def as_labels(y: np.ndarray, task: str) -> np.ndarray:
    """Labels in the form the probes use: binary (N,) int64 (an (N, 1) column is accepted),
    multiclass (N,) int64, multilabel (N, C) float64 with NaN kept."""
    y = np.asarray(y)
    if task == "binary" and y.ndim == 2 and y.shape[1] == 1:
        return y[:, 0].astype(np.int64)
    if task in ("binary", "multiclass"):
        return y.astype(np.int64)
    return y.astype(np.float64)


def num_classes(task: str, ys: Sequence[np.ndarray],
                label_names: Sequence[str] | None = None) -> int:
    """Classes in the label space: columns for multilabel; for multiclass the number of label
    names when given (a class absent from every split still gets a score column), else the
    largest label + 1."""
    if task == "binary":
        return 2
    if task == "multilabel":
        return np.asarray(ys[0]).shape[1]
    if label_names is not None:
        return len(label_names)
    return int(max(np.max(y) for y in ys)) + 1


def standardize(train_x: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Zero mean / unit variance with train statistics only (constant features stay 0)."""
    scaler = StandardScaler().fit(train_x)
    return [scaler.transform(train_x).astype(np.float32)] + [
        scaler.transform(x).astype(np.float32) for x in others]


def val_selection_score(metrics: dict[str, Any]) -> float:
    """Selection score; an undefined val AUC ranks below every defined one."""
    return -np.inf if metrics["macro_auc"] is None else metrics["macro_auc"]


# ----------------------------------------------------------------------------- logistic probe

class _LogisticModel:
    """One sklearn model (binary / multiclass) or one binary model per class (multilabel).

    Multilabel: each class is fitted on the train rows where its label is known (NaN rows are
    ignored). A class whose known train labels hold a single value cannot be fitted; it gets the
    constant score equal to that value (0 or 1), i.e. AUC 0.5 wherever it is evaluated, and is
    named in ``constant_classes``.
    """

    def __init__(self, task: str, C: float, seed: int, max_iter: int, n_classes: int):
        self.task, self.C, self.seed, self.max_iter = task, C, seed, max_iter
        self.n_classes = n_classes
        self.models: list[LogisticRegression | None] = []
        self.constants: dict[int, float] = {}

    def _new(self) -> LogisticRegression:
        return LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=self.seed)

    def fit(self, x: np.ndarray, y: np.ndarray) -> "_LogisticModel":
        with warnings.catch_warnings():
            # A probe that hits max_iter is still a valid (if slightly under-fitted) probe; the
            # warning would fire for every C and drown real messages.
            warnings.simplefilter("ignore", ConvergenceWarning)
            if self.task != "multilabel":
                self.models = [self._new().fit(x, y)]
                return self
            for c in range(y.shape[1]):
                known = ~np.isnan(y[:, c])
                yc = y[known, c].astype(np.int64)
                values = np.unique(yc)
                if len(values) < 2:
                    self.constants[c] = float(values[0]) if len(values) else 0.0
                    self.models.append(None)
                else:
                    self.models.append(self._new().fit(x[known], yc))
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if self.task == "binary":
            return self.models[0].predict_proba(x)[:, 1]
        if self.task == "multiclass":
            model = self.models[0]
            proba = np.zeros((len(x), self.n_classes))
            # Classes absent from train get probability 0 (sklearn only knows the seen ones).
            proba[:, model.classes_.astype(int)] = model.predict_proba(x)
            return proba
        return np.stack([np.full(len(x), self.constants[c]) if m is None
                         else m.predict_proba(x)[:, 1] for c, m in enumerate(self.models)], axis=1)

    @property
    def constant_classes(self) -> list[int]:
        return sorted(self.constants)


@dataclass
class FittedLogistic:
    """A chosen logistic probe: train-split scaler + model, usable on any features of the same
    backbone (``predict_proba`` takes raw, unstandardised features)."""

    scaler: StandardScaler
    model: _LogisticModel
    val_metrics: dict[str, Any]

    @property
    def C(self) -> float:
        return self.model.C

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(self.scaler.transform(x).astype(np.float32))


def fit_logistic(train: SplitData, val: SplitData, task: str, *,
                 Cs: Sequence[float] = (0.01, 0.1, 1, 10), seed: int = 0, max_iter: int = 2000,
                 label_names: Sequence[str] | None = None,
                 n_classes: int | None = None) -> FittedLogistic:
    """Fit one model per C on standardised train features; keep the best by val macro-AUC
    (the smallest C on a tie, i.e. the strongest regularisation)."""
    if not Cs:
        raise ValueError("Cs must not be empty")
    scaler = StandardScaler().fit(train[0])
    xtr = scaler.transform(train[0]).astype(np.float32)
    xva = scaler.transform(val[0]).astype(np.float32)
    ytr, yva = as_labels(train[1], task), as_labels(val[1], task)
    n_classes = n_classes or num_classes(task, (ytr, yva), label_names)
    best: FittedLogistic | None = None
    for C in sorted(Cs):
        model = _LogisticModel(task, C, seed, max_iter, n_classes).fit(xtr, ytr)
        val_metrics = classification_metrics(yva, model.predict_proba(xva), task, label_names)
        if best is None or val_selection_score(val_metrics) > val_selection_score(
                best.val_metrics):
            best = FittedLogistic(scaler, model, val_metrics)
    assert best is not None
    return best


def logistic_probe(train: SplitData, val: SplitData, test: SplitData, task: str, *,
                   Cs: Sequence[float] = (0.01, 0.1, 1, 10), seed: int = 0, max_iter: int = 2000,
                   label_names: Sequence[str] | None = None) -> ProbeResult:
    """L2-regularised logistic regression (lbfgs) on standardised features.

    Each C in ``Cs`` is fitted on train and scored by val macro-AUC; the best C (the smallest on a
    tie, i.e. the strongest regularisation) is kept, and that train-only model scores test.
    """
    check_splits(train, val, test, task)
    n_classes = num_classes(task, (train[1], val[1], test[1]), label_names)
    fitted = fit_logistic(train, val, task, Cs=Cs, seed=seed, max_iter=max_iter,
                          label_names=label_names, n_classes=n_classes)
    test_scores = fitted.predict_proba(test[0])
    constant = fitted.model.constant_classes
    return ProbeResult(
        metrics=classification_metrics(test[1], test_scores, task, label_names),
        val_metrics=fitted.val_metrics, test_scores=test_scores,
        chosen={"C": fitted.C, "max_iter": max_iter, "constant_classes": constant},
        protocol="logreg",
        notes=[f"class {c} has a single label value in train: constant score" for c in constant])


def raw_pixel_probe(imageset, *, size: int = 28, C: float = 0.01, seed: int = 0) -> ProbeResult:
    """The floor a pretrained backbone must clear: ``logistic_probe`` on standardised raw pixels.

    Images are resized (antialiased) to ``size`` px, MedMNIST's size and that of the ANCHORS.md
    floor, so large images stay tractable; channels are kept. C is fixed (0.01, as in ANCHORS.md).
    """
    import torch.nn.functional as F

    def part(name: str) -> SplitData:
        view = imageset.split_view(name)
        x = torch.from_numpy(np.ascontiguousarray(view.images)).float()
        x = x / 255.0 if view.images.dtype == np.uint8 else x
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
        return x.reshape(len(view), -1).numpy(), view.labels

    result = logistic_probe(part("train"), part("val"), part("test"), imageset.task, Cs=(C,), seed=seed,
                            label_names=imageset.label_names)
    result.protocol = f"logreg on raw pixels ({size} px)"
    return result


# ----------------------------------------------------------------------------- torch probe

def _probe_loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """BCE for binary, cross-entropy for multiclass, masked BCE for multilabel: the mean of
    ``BCE(logit, y)`` over the known (non-NaN) entries only."""
    if task == "binary":
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], y)
    if task == "multiclass":
        return nn.functional.cross_entropy(logits, y.long())
    known = ~torch.isnan(y)
    if not known.any():
        return logits.sum() * 0.0
    return nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])


def _probabilities(logits: torch.Tensor, task: str) -> np.ndarray:
    if task == "binary":
        return torch.sigmoid(logits[:, 0]).numpy().astype(np.float64)
    if task == "multiclass":
        return torch.softmax(logits, dim=1).numpy().astype(np.float64)
    return torch.sigmoid(logits).numpy().astype(np.float64)


def torch_linear_probe(train: SplitData, val: SplitData, test: SplitData, task: str, *,
                       epochs: int = 100, lr: float = 1e-3, weight_decay: float = 0.0,
                       seed: int = 0, batch_size: int = 256,
                       label_names: Sequence[str] | None = None) -> ProbeResult:
    """A linear layer trained with AdamW on standardised features (CPU; features are small).

    Mini-batches of ``batch_size`` shuffled rows (full batch when ``batch_size >= N``). After
    every epoch the val macro-AUC is computed; the weights of the best epoch (the earliest on a
    tie) score test. Initialisation and shuffling follow ``seed`` exactly.
    """
    check_splits(train, val, test, task)
    xtr, xva, xte = (torch.from_numpy(x) for x in standardize(train[0], val[0], test[0]))
    n_classes = num_classes(task, (train[1], val[1], test[1]), label_names)
    y_dtype = torch.long if task == "multiclass" else torch.float32
    ytr = torch.as_tensor(as_labels(train[1], task), dtype=y_dtype)
    gen = torch.Generator().manual_seed(seed)
    head = nn.Linear(xtr.shape[1], 1 if task == "binary" else n_classes)
    with torch.no_grad():
        # Re-initialise from our own generator so the result does not depend on global RNG state.
        bound = 1.0 / np.sqrt(xtr.shape[1])
        head.weight.uniform_(-bound, bound, generator=gen)
        head.bias.uniform_(-bound, bound, generator=gen)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    best_auc, best_epoch, best_state, best_val = -np.inf, -1, None, None
    for epoch in range(epochs):
        head.train()
        order = torch.randperm(len(xtr), generator=gen)
        for start in range(0, len(xtr), batch_size):
            idx = order[start:start + batch_size]
            loss = _probe_loss(head(xtr[idx]), ytr[idx], task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        head.eval()
        with torch.no_grad():
            val_metrics = classification_metrics(val[1], _probabilities(head(xva), task), task,
                                                  label_names)
        if val_selection_score(val_metrics) > best_auc or best_state is None:
            best_auc, best_epoch = val_selection_score(val_metrics), epoch + 1
            best_val = val_metrics
            best_state = {k: v.clone() for k, v in head.state_dict().items()}
    head.load_state_dict(best_state)
    with torch.no_grad():
        test_scores = _probabilities(head(xte), task)
    return ProbeResult(
        metrics=classification_metrics(test[1], test_scores, task, label_names),
        val_metrics=best_val, test_scores=test_scores,
        chosen={"epoch": best_epoch, "epochs": epochs, "lr": lr, "weight_decay": weight_decay,
                "batch_size": batch_size},
        protocol="torch_linear")
