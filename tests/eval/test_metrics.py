import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

from medvlp.eval.metrics import (binary_auc, bootstrap_ci, bootstrap_distribution,
                                 classification_metrics, summarize_seeds)


def test_binary_auc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    s = np.round(rng.random(300) + 0.3 * y, 1)  # rounding creates many ties
    assert binary_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert binary_auc(np.ones(5), np.arange(5)) is None


def test_binary_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 200)
    p = np.clip(0.35 * y + rng.random(200) * 0.7, 0, 1)
    m = classification_metrics(y[:, None], p, "binary", ["neg", "pos"])
    assert list(m["per_class_auc"]) == ["pos"]
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["accuracy"] == pytest.approx(accuracy_score(y, p >= 0.5))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p >= 0.5, average="macro"))
    assert m["n"] == 200


def test_multiclass_hand_made_case():
    y = np.array([0, 0, 1, 1, 2, 2])
    s = np.array([[.8, .1, .1], [.3, .6, .1], [.2, .7, .1],
                  [.1, .8, .1], [.2, .2, .6], [.5, .1, .4]])
    m = classification_metrics(y, s, "multiclass", ["a", "b", "c"])
    # class a vs rest: positives .8,.3; negatives .2,.1,.2,.5 -> pairs won 4 + 3 = 7 of 8
    assert m["per_class_auc"]["a"] == pytest.approx(7 / 8)
    # class b: positives .7,.8; negatives .1,.6,.2,.1 -> all 8 won
    assert m["per_class_auc"]["b"] == pytest.approx(1.0)
    # class c: positives .6,.4; negatives .1 x4 -> all won
    assert m["per_class_auc"]["c"] == pytest.approx(1.0)
    assert m["macro_auc"] == pytest.approx((0.875 + 1 + 1) / 3)
    assert m["macro_auc"] == pytest.approx(roc_auc_score(y, s, multi_class="ovr"))
    pred = s.argmax(1)  # [0,1,1,1,2,0]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))


def test_multiclass_absent_class_has_no_auc():
    y = np.array([0, 1, 0, 1])
    s = np.array([[.6, .3, .1], [.2, .7, .1], [.5, .3, .2], [.4, .4, .2]])
    m = classification_metrics(y, s, "multiclass")
    assert m["per_class_auc"]["2"] is None
    assert m["macro_auc"] == pytest.approx(np.mean([m["per_class_auc"]["0"],
                                                    m["per_class_auc"]["1"]]))


def test_multilabel_masks_nan_per_class():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, (100, 3)).astype(float)
    s = np.clip(0.3 * y + rng.random((100, 3)) * 0.8, 0, 1)
    y[rng.random((100, 3)) < 0.2] = np.nan
    y[:, 2] = np.where(np.isnan(y[:, 2]), np.nan, 0.0)  # class 2: negatives only -> undefined
    m = classification_metrics(y, s, "multilabel", ["x", "y", "z"])
    for c, name in enumerate(["x", "y"]):
        known = ~np.isnan(y[:, c])
        assert m["per_class_auc"][name] == pytest.approx(roc_auc_score(y[known, c], s[known, c]))
    assert m["per_class_auc"]["z"] is None
    assert m["macro_auc"] == pytest.approx((m["per_class_auc"]["x"] + m["per_class_auc"]["y"]) / 2)
    known = ~np.isnan(y)
    assert m["accuracy"] == pytest.approx(np.mean((s[known] >= 0.5) == y[known]))
    f1s = [f1_score(y[~np.isnan(y[:, c]), c], s[~np.isnan(y[:, c]), c] >= 0.5) for c in range(3)]
    z_pred_pos = (s[~np.isnan(y[:, 2]), 2] >= 0.5).any()
    expected = f1s if z_pred_pos else f1s[:2]  # z defined (as 0) only if positives predicted
    assert m["macro_f1"] == pytest.approx(np.mean(expected))


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="binary"):
        classification_metrics(np.array([0, 2]), np.array([.1, .2]), "binary")
    with pytest.raises(ValueError, match="rows"):
        classification_metrics(np.array([0, 1]), np.array([.1, .2, .3]), "binary")
    with pytest.raises(ValueError, match="task"):
        classification_metrics(np.array([0, 1]), np.array([.1, .2]), "regression")


def test_bootstrap_ci_contains_estimate_and_is_deterministic():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    point = classification_metrics(y, p, "binary")["macro_auc"]
    lo, hi = bootstrap_ci(y, p, "binary", n_boot=300, seed=5)
    assert lo < point < hi
    assert hi - lo < 0.2
    assert bootstrap_ci(y, p, "binary", n_boot=300, seed=5) == (lo, hi)
    assert bootstrap_ci(y, p, "binary", n_boot=300, seed=6) != (lo, hi)


def test_bootstrap_counts_undefined_resamples():
    y = np.array([0] * 9 + [1])  # one positive: many resamples miss it
    p = np.linspace(0, 1, 10)
    values, skipped = bootstrap_distribution(y, p, "binary", n_boot=200, seed=0)
    assert skipped > 0 and len(values) + skipped == 200
    # P(resample misses the positive) = 0.9**10 ~ 0.35
    assert 0.2 < skipped / 200 < 0.5


def test_summarize_seeds():
    runs = [{"macro_auc": 0.8, "accuracy": 0.7, "per_class_auc": {}},
            {"macro_auc": 0.9, "accuracy": None, "per_class_auc": {}},
            {"macro_auc": 0.7, "accuracy": 0.9, "per_class_auc": {}}]
    s = summarize_seeds(runs)
    assert s["macro_auc"]["mean"] == pytest.approx(0.8)
    assert s["macro_auc"]["std"] == pytest.approx(0.1)  # sample std, ddof=1
    assert s["macro_auc"]["n"] == 3 and s["macro_auc"]["std_defined"]
    assert s["accuracy"]["n"] == 2 and s["accuracy"]["mean"] == pytest.approx(0.8)
    one = summarize_seeds(runs[:1])
    assert one["macro_auc"]["std"] == 0.0 and not one["macro_auc"]["std_defined"]
