"""Weighted k-nearest-neighbour classification on frozen features, as in DINO's kNN evaluation.

For a query feature q and train features x_j (all L2-normalised), with cosine similarity
``s_j = q . x_j`` and the k most similar train images N_k(q):

    w_j = exp(s_j / T)                                  (T = temperature, 0.07 in DINO)
    score_c(q) = sum_{j in N_k(q)} w_j [y_j = c]  /  sum_{j in N_k(q)} w_j

so the scores are class probabilities that sum to one (DINO uses the unnormalised sums to take
an argmax; normalising does not change it and gives AUC-ready scores). Binary returns
``score_1``. Multilabel: each class is a weighted mean over the neighbours whose label for that
class is known, ``score_c = sum_j w_j y_jc [known_jc] / sum_j w_j [known_jc]``; when no neighbour
knows the class, the score is the class's train prevalence.

k is chosen on the val split by macro-AUC from ``ks`` unless ``k`` is given.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvlp.eval.metrics import classification_metrics
from medvlp.eval.probe import (ProbeResult, SplitData, as_labels, check_splits, num_classes,
                               val_selection_score)

_CHUNK = 1024  # query rows per similarity block: bounds memory at CHUNK x N_train floats


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def knn_scores(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray, task: str,
               k: int, temperature: float, n_classes: int) -> np.ndarray:
    """Class scores of ``query_x`` by the temperature-weighted vote (module docstring)."""
    xtr, xq = _normalize(train_x), _normalize(query_x)
    k = min(k, len(xtr))
    if task == "multilabel":
        targets = np.nan_to_num(train_y, nan=0.0)
        known = (~np.isnan(train_y)).astype(np.float64)
        prevalence = np.nansum(train_y, axis=0) / np.maximum(known.sum(axis=0), 1)
    else:
        targets = np.eye(n_classes)[train_y]
        known = None
    scores = np.empty((len(xq), n_classes))
    for start in range(0, len(xq), _CHUNK):
        sim = xq[start:start + _CHUNK] @ xtr.T
        top = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1).astype(np.float64)
        # Subtracting the row max leaves the normalised weights unchanged and avoids overflow
        # of exp(1 / 0.07).
        w = np.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / temperature)
        if known is None:
            block = np.einsum("qk,qkc->qc", w, targets[top])
            scores[start:start + len(block)] = block / w.sum(axis=1, keepdims=True)
        else:
            num = np.einsum("qk,qkc->qc", w, targets[top] * known[top])
            den = np.einsum("qk,qkc->qc", w, known[top])
            block = np.where(den > 0, num / np.maximum(den, 1e-300), prevalence)
            scores[start:start + len(block)] = block
    return scores[:, 1] if task == "binary" else scores


def knn_probe(train: SplitData, val: SplitData, test: SplitData, task: str, *,
              k: int | None = None, ks: Sequence[int] = (10, 20, 50), temperature: float = 0.07,
              seed: int = 0, label_names: Sequence[str] | None = None) -> ProbeResult:
    """Weighted kNN probe. ``k=None`` chooses k from ``ks`` by val macro-AUC (smallest on a
    tie); an explicit ``k`` is used as is. The vote is deterministic: ``seed`` is accepted so all
    protocols share one call signature and is recorded, not used.
    """
    check_splits(train, val, test, task)
    ytr, yva, yte = (as_labels(y, task) for y in (train[1], val[1], test[1]))
    n_classes = num_classes(task, (ytr, yva, yte), label_names)
    candidates = [k] if k is not None else sorted(ks)
    best = None
    for kk in candidates:
        val_metrics = classification_metrics(
            yva, knn_scores(train[0], ytr, val[0], task, kk, temperature, n_classes), task,
            label_names)
        if best is None or val_selection_score(val_metrics) > best[0]:
            best = (val_selection_score(val_metrics), kk, val_metrics)
    assert best is not None, "ks must not be empty"
    _, k_best, val_metrics = best
    test_scores = knn_scores(train[0], ytr, test[0], task, k_best, temperature, n_classes)
    return ProbeResult(
        metrics=classification_metrics(yte, test_scores, task, label_names),
        val_metrics=val_metrics, test_scores=test_scores,
        chosen={"k": min(k_best, len(ytr)), "temperature": temperature, "seed": seed},
        protocol="knn")
