"""Cross-dataset head transfer: fit a linear head on one dataset's features, test on another's.

This asks whether what a backbone encodes for a finding on one dataset carries over to another
acquired elsewhere, without any target training labels. Typical use: a multilabel head trained on
NIH ChestX-ray14 features, scored on PneumoniaMNIST's test split with the NIH "Pneumonia" column
standing for PneumoniaMNIST's label 1::

    src = features_for_splits(backbone, nih)            # multilabel, 14 columns
    tgt = features_for_splits(backbone, pneumoniamnist)  # binary
    pneumonia = nih.label_names.index("Pneumonia")
    result = transfer_head(src["train"], tgt["test"], "multilabel", {pneumonia: 1},
                           target_task="binary", source_val=src["val"])

Both datasets must be embedded by the same backbone with the same preprocessing.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medvlp.eval.metrics import classification_metrics
from medvlp.eval.probe import ProbeResult, SplitData, as_labels, fit_logistic


def map_scores(source_scores: np.ndarray, source_task: str, label_map: dict[int, int],
               target_task: str, n_target_classes: int) -> np.ndarray:
    """Turn source-space probabilities into target-space scores.

    ``label_map`` maps a source class (column) to a target class; each target class scored must
    receive exactly one source class. A binary source has classes 0 (``1 - p``) and 1 (``p``).
    - binary target: the score is the probability of the source class mapped to 1.
    - multiclass target: every target class needs a source class; the mapped probabilities are
      renormalised to sum to one per image.
    - multilabel target: every target column needs a source class; probabilities are used as is.
    """
    probs = (np.stack([1.0 - source_scores, source_scores], axis=1) if source_task == "binary"
             else np.asarray(source_scores))
    targets = list(label_map.values())
    if len(set(targets)) != len(targets):
        raise ValueError(f"label_map {label_map}: two source classes map to one target class")
    bad = [s for s in label_map if not 0 <= s < probs.shape[1]]
    if bad:
        raise ValueError(f"label_map {label_map}: source classes {bad} not in [0, "
                         f"{probs.shape[1]})")
    inverse = {t: s for s, t in label_map.items()}
    if target_task == "binary":
        if 1 not in inverse:
            raise ValueError(f"label_map {label_map}: binary target needs a source class mapped "
                             f"to 1")
        return probs[:, inverse[1]]
    missing = [t for t in range(n_target_classes) if t not in inverse]
    if missing:
        raise ValueError(f"label_map {label_map}: target classes {missing} have no source class")
    out = probs[:, [inverse[t] for t in range(n_target_classes)]]
    if target_task == "multiclass":
        out = out / np.maximum(out.sum(axis=1, keepdims=True), 1e-12)
    return out


def transfer_head(source: SplitData, target_test: SplitData, task: str,
                  label_map: dict[int, int] | None = None, *, target_task: str | None = None,
                  source_val: SplitData | None = None, Cs: Sequence[float] = (0.01, 0.1, 1, 10),
                  seed: int = 0, max_iter: int = 2000,
                  target_label_names: Sequence[str] | None = None) -> ProbeResult:
    """Logistic probe fitted on ``source`` (task ``task``), scored on ``target_test``.

    C is chosen by macro-AUC on ``source_val`` (never on the target); without ``source_val`` the
    single C must be given (``Cs`` of length one) so the choice is explicit. With
    ``label_map=None`` the target shares the source label space. ``val_metrics`` of the result
    are the source val metrics; ``metrics`` are the target test metrics.
    """
    if source_val is None and len(Cs) != 1:
        raise ValueError("transfer_head: without source_val pass a single C, e.g. Cs=(0.1,)")
    target_task = target_task or task
    if np.shape(source[0])[1:] != np.shape(target_test[0])[1:]:
        raise ValueError(f"source features {np.shape(source[0])} and target features "
                         f"{np.shape(target_test[0])} differ in width: embed both datasets with "
                         f"the same backbone")
    if label_map is None and target_task != task:
        raise ValueError(f"target_task {target_task!r} differs from {task!r}: give a label_map")
    # With a single C there is nothing to select, so the source train split only stands in
    # for val to report numbers; the choice never sees target labels either way.
    val = source_val if source_val is not None else source
    fitted = fit_logistic(source, val, task, Cs=Cs, seed=seed, max_iter=max_iter)
    source_scores = fitted.predict_proba(target_test[0])
    y_target = as_labels(target_test[1], target_task)
    if label_map is None:
        target_scores = source_scores
    else:
        if target_task == "binary":
            n_target = 2
        elif target_task == "multilabel":
            n_target = y_target.shape[1]
        else:
            n_target = len(target_label_names) if target_label_names else int(y_target.max()) + 1
        target_scores = map_scores(source_scores, task, label_map, target_task, n_target)
    return ProbeResult(
        metrics=classification_metrics(y_target, target_scores, target_task, target_label_names),
        val_metrics=fitted.val_metrics, test_scores=target_scores,
        chosen={"C": fitted.C, "label_map": dict(label_map or {}), "source_task": task,
                "target_task": target_task},
        protocol="transfer_logreg")
