"""Classification metrics, bootstrap confidence intervals and seed summaries.

Definitions (N images, C classes; scores are probabilities):

- **AUC** of one binary problem with positives P and negatives Q is the Mann-Whitney statistic
  ``AUC = (1 / (|P| |Q|)) * sum_{p in P, q in Q} [s_p > s_q] + 0.5 [s_p == s_q]``,
  computed from average ranks: ``(R_P - |P|(|P|+1)/2) / (|P| |Q|)`` with ``R_P`` the rank sum of
  the positives. It equals ``sklearn.metrics.roc_auc_score``. It is *undefined* (``None``) when
  the evaluated labels hold a single value.
- **binary**: ``y_true`` (N,) in {0, 1}, ``y_score`` (N,) = P(class 1). ``per_class_auc`` has one
  entry (the positive class); ``accuracy`` thresholds the probability (``s >= threshold``).
- **multiclass**: ``y_true`` (N,) in [0, C), ``y_score`` (N, C). Per-class AUC is one-vs-rest
  (class c against all others, scored by column c); ``accuracy`` uses the argmax.
- **multilabel**: ``y_true`` (N, C) in {0, 1, NaN}, NaN = label not known. Every class is
  evaluated on its known rows only (masked); ``accuracy`` is element-wise over known entries.
- ``macro_auc`` is the unweighted mean of the defined per-class AUCs (``None`` if none is).
- ``macro_f1`` is the unweighted mean over classes of ``F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c)``.
  binary: mean of F1 of class 0 and class 1 (same as sklearn ``average="macro"``);
  multiclass: over classes present in the labels or predictions (sklearn's default label set);
  multilabel: per class on known rows, classes with ``2TP + FP + FN = 0`` (no positives
  predicted or present) are undefined and left out of the mean.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.stats import rankdata

TASKS = ("binary", "multiclass", "multilabel")
SCALAR_METRICS = ("macro_auc", "accuracy", "macro_f1")


def binary_auc(y: np.ndarray, score: np.ndarray) -> float | None:
    """ROC AUC via average ranks (ties count one half); ``None`` when ``y`` has one value only."""
    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _f1(y: np.ndarray, pred: np.ndarray) -> float | None:
    """F1 of the positive value of boolean arrays; ``None`` when ``2TP + FP + FN == 0``."""
    tp = int(np.sum(y & pred))
    denom = 2 * tp + int(np.sum(~y & pred)) + int(np.sum(y & ~pred))
    return None if denom == 0 else 2.0 * tp / denom


def _mean_defined(values: Sequence[float | None]) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def check_inputs(y_true: Any, y_score: Any, task: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise shapes: binary -> (N,), (N,); otherwise (N,) / (N, C), (N, C)."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    y = np.asarray(y_true)
    s = np.asarray(y_score, dtype=np.float64)
    if task == "binary":
        # (N, 1) columns are common (MedMNIST labels, one-logit heads): accept them.
        y = y.reshape(-1) if y.ndim == 2 and y.shape[1] == 1 else y
        s = s.reshape(-1) if s.ndim == 2 and s.shape[1] == 1 else s
        if y.ndim != 1 or s.ndim != 1:
            raise ValueError(f"binary: expected y_true (N,) and y_score (N,), got {y.shape} and "
                             f"{s.shape}")
        if not np.isin(y, (0, 1)).all():
            raise ValueError("binary: y_true must contain only 0 and 1")
    elif task == "multiclass":
        if y.ndim != 1 or s.ndim != 2:
            raise ValueError(f"multiclass: expected y_true (N,) and y_score (N, C), got {y.shape} "
                             f"and {s.shape}")
        if len(y) and (y.min() < 0 or y.max() >= s.shape[1]):
            raise ValueError(f"multiclass: labels must lie in [0, {s.shape[1]})")
    else:
        y = y.astype(np.float64)
        if y.ndim != 2 or s.shape != y.shape:
            raise ValueError(f"multilabel: expected y_true and y_score both (N, C), got {y.shape} "
                             f"and {s.shape}")
        known = y[~np.isnan(y)]
        if not np.isin(known, (0.0, 1.0)).all():
            raise ValueError("multilabel: y_true must contain only 0, 1 and NaN")
    if len(y) != len(s):
        raise ValueError(f"y_true has {len(y)} rows but y_score has {len(s)}")
    if np.isnan(s).any():
        raise ValueError("y_score contains NaN")
    return y, s


def classification_metrics(y_true: Any, y_score: Any, task: str,
                           label_names: Sequence[str] | None = None,
                           threshold: float = 0.5) -> dict[str, Any]:
    """Per-class AUC, macro AUC, accuracy and macro-F1 (definitions in the module docstring).

    Returns ``{"per_class_auc": {name: AUC | None}, "macro_auc", "accuracy", "macro_f1", "n"}``.
    """
    y, s = check_inputs(y_true, y_score, task)
    n_classes = 2 if task == "binary" else s.shape[1]
    names = list(label_names) if label_names is not None else [str(c) for c in range(n_classes)]
    if len(names) != n_classes:
        raise ValueError(f"{len(names)} label names for {n_classes} classes")

    if task == "binary":
        yb = y.astype(bool)
        pred = s >= threshold
        per_class = {names[1]: binary_auc(yb, s)}
        accuracy = float(np.mean(pred == yb)) if len(y) else None
        macro_f1 = _mean_defined([_f1(~yb, ~pred), _f1(yb, pred)])
    elif task == "multiclass":
        pred_cls = s.argmax(axis=1)
        per_class = {names[c]: binary_auc(y == c, s[:, c]) for c in range(n_classes)}
        accuracy = float(np.mean(pred_cls == y)) if len(y) else None
        present = np.union1d(np.unique(y), np.unique(pred_cls))
        macro_f1 = _mean_defined([_f1(y == c, pred_cls == c) for c in present])
    else:
        per_class, f1s, correct, n_known = {}, [], 0, 0
        for c in range(n_classes):
            known = ~np.isnan(y[:, c])
            yc, sc = y[known, c].astype(bool), s[known, c]
            per_class[names[c]] = binary_auc(yc, sc)
            f1s.append(_f1(yc, sc >= threshold))
            correct += int(np.sum((sc >= threshold) == yc))
            n_known += int(known.sum())
        accuracy = correct / n_known if n_known else None
        macro_f1 = _mean_defined(f1s)
    return {
        "per_class_auc": per_class,
        "macro_auc": _mean_defined(list(per_class.values())),
        "accuracy": accuracy,
        "macro_f1": macro_f1,
        "n": int(len(y)),
    }


def bootstrap_distribution(y_true: Any, y_score: Any, task: str, metric: str = "macro_auc",
                           n_boot: int = 1000, seed: int = 0,
                           threshold: float = 0.5) -> tuple[np.ndarray, int]:
    """Metric values over ``n_boot`` resamples of the images (with replacement).

    Resamples where the metric is undefined (e.g. a resample with one class only) are skipped;
    returns ``(values of the defined resamples, number skipped)``. Deterministic per ``seed``.
    """
    if metric not in SCALAR_METRICS:
        raise ValueError(f"metric must be one of {SCALAR_METRICS}, got {metric!r}")
    y, s = check_inputs(y_true, y_score, task)
    rng = np.random.default_rng(seed)
    values, skipped = [], 0
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), size=len(y))
        value = classification_metrics(y[idx], s[idx], task, threshold=threshold)[metric]
        if value is None:
            skipped += 1
        else:
            values.append(value)
    return np.asarray(values, dtype=np.float64), skipped


def bootstrap_ci(y_true: Any, y_score: Any, task: str, metric: str = "macro_auc",
                 n_boot: int = 1000, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float | None, float | None]:
    """Percentile bootstrap ``(1 - alpha)`` interval over images: the ``alpha/2`` and
    ``1 - alpha/2`` quantiles of the metric over resamples (undefined resamples skipped; use
    :func:`bootstrap_distribution` to get their count). ``(None, None)`` if no resample is defined.
    """
    values, _ = bootstrap_distribution(y_true, y_score, task, metric, n_boot, seed)
    return percentile_interval(values, alpha)


def percentile_interval(values: np.ndarray, alpha: float = 0.05) -> tuple[float | None,
                                                                          float | None]:
    """The ``alpha/2`` and ``1 - alpha/2`` quantiles (linear interpolation) of ``values``."""
    if len(values) == 0:
        return None, None
    lo, hi = np.quantile(values, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(lo), float(hi)


def summarize_seeds(per_seed: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Mean and sample standard deviation (``ddof=1``) of every scalar metric over seeds.

    ``None`` values (undefined metric) are left out and ``n`` says how many seeds count. With
    ``n == 1`` the std is reported as 0.0 and ``std_defined`` is False, so a single-seed number is
    never mistaken for a zero-variance one.
    """
    keys = [k for k in per_seed[0] if k in SCALAR_METRICS] if per_seed else []
    summary: dict[str, dict[str, Any]] = {}
    for key in keys:
        values = [float(m[key]) for m in per_seed if m.get(key) is not None]
        n = len(values)
        summary[key] = {
            "mean": float(np.mean(values)) if n else None,
            "std": float(np.std(values, ddof=1)) if n > 1 else (0.0 if n == 1 else None),
            "n": n,
            "std_defined": n > 1,
        }
    return summary
