"""Probes on real data (raw pixels): each check can fail if a probe is wrong."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from medvlp.eval.knn import knn_probe, knn_scores
from medvlp.eval.probe import logistic_probe, torch_linear_probe
from medvlp.eval.transfer import map_scores, transfer_head


def _subsample(split, n, seed=0):
    x, y = split
    idx = np.random.default_rng(seed).choice(len(x), size=min(n, len(x)), replace=False)
    return x[idx], y[idx]


def test_logistic_probe_pneumonia_raw_pixels(pneumonia_pixels):
    sp = pneumonia_pixels
    r = logistic_probe(_subsample(sp["train"], 2000), sp["val"], sp["test"], "binary",
                       Cs=(0.01, 0.1), label_names=["normal", "pneumonia"])
    # Measured floor on the full train split is 0.927 (C=0.01).
    assert r.metrics["macro_auc"] > 0.9
    assert r.chosen["C"] == 0.01
    assert r.test_scores.shape == (len(sp["test"][1]),)
    assert r.metrics["macro_auc"] == pytest.approx(roc_auc_score(sp["test"][1], r.test_scores))
    assert r.protocol == "logreg"


def test_knn_probe_pneumonia_raw_pixels(pneumonia_pixels):
    sp = pneumonia_pixels
    r = knn_probe(_subsample(sp["train"], 2000), sp["val"], sp["test"], "binary")
    assert r.metrics["macro_auc"] > 0.85
    assert r.chosen["k"] in (10, 20, 50)
    assert np.all((r.test_scores >= -1e-9) & (r.test_scores <= 1 + 1e-9))


def test_knn_scores_follow_the_weighted_vote_formula():
    train_x = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    train_y = np.array([0, 1, 1])
    q = np.array([[1.0, 0.2]])
    t = 0.5
    scores = knn_scores(train_x, train_y, q, "multiclass", k=2, temperature=t, n_classes=2)
    qn = q / np.linalg.norm(q)
    sims = (train_x / np.linalg.norm(train_x, axis=1, keepdims=True)) @ qn[0]
    top = np.argsort(-sims)[:2]  # rows 0 and 2
    w = np.exp(sims[top] / t)
    expected_1 = w[train_y[top] == 1].sum() / w.sum()
    assert scores[0, 1] == pytest.approx(expected_1)
    assert scores[0].sum() == pytest.approx(1.0)


def test_torch_linear_probe_pneumonia_raw_pixels(pneumonia_pixels):
    sp = pneumonia_pixels
    r = torch_linear_probe(_subsample(sp["train"], 1500), sp["val"], sp["test"], "binary",
                           epochs=15, seed=0)
    assert r.metrics["macro_auc"] > 0.9
    assert 1 <= r.chosen["epoch"] <= 15


def test_torch_linear_probe_is_deterministic_per_seed(pneumonia_pixels):
    sp = {k: _subsample(v, 200) for k, v in pneumonia_pixels.items()}
    runs = [torch_linear_probe(sp["train"], sp["val"], sp["test"], "binary", epochs=5, seed=s,
                               batch_size=64) for s in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0].test_scores, runs[1].test_scores)
    assert not np.array_equal(runs[0].test_scores, runs[2].test_scores)


def _pool4(split):
    """64x64 -> 16x16 block means: keeps the test fast (256 features instead of 4096)."""
    x, y = split
    return x.reshape(len(x), 16, 4, 16, 4).mean(axis=(2, 4)).reshape(len(x), -1), y


def test_multilabel_probes_nih_with_missing_labels(nih, nih_pixels):
    sp = {k: _pool4(v) for k, v in nih_pixels.items()}
    rng = np.random.default_rng(0)
    # Hide 20 % of the labels, and all Hernia labels in train but two negatives, to exercise
    # masking and the constant-score rule for a class with a single known value.
    ytr = sp["train"][1].copy()
    ytr[rng.random(ytr.shape) < 0.2] = np.nan
    hernia = nih.label_names.index("Hernia")
    ytr[:, hernia] = np.nan
    ytr[:2, hernia] = 0.0
    train = (sp["train"][0], ytr)
    r = logistic_probe(train, sp["val"], sp["test"], "multilabel", Cs=(0.01,),
                       label_names=nih.label_names)
    assert set(r.metrics["per_class_auc"]) == set(nih.label_names)
    assert r.chosen["constant_classes"] == [hernia]
    assert np.all(r.test_scores[:, hernia] == 0.0)
    defined = [v for v in r.metrics["per_class_auc"].values() if v is not None]
    assert r.metrics["macro_auc"] == pytest.approx(np.mean(defined))
    assert 0.5 < r.metrics["macro_auc"] < 0.9
    t = torch_linear_probe(train, sp["val"], sp["test"], "multilabel", epochs=5,
                           label_names=nih.label_names)
    assert t.test_scores.shape == sp["test"][1].shape and not np.isnan(t.test_scores).any()
    k = knn_probe(train, sp["val"], sp["test"], "multilabel", k=20)
    assert k.test_scores.shape == sp["test"][1].shape and not np.isnan(k.test_scores).any()


def test_transfer_head_maps_source_column_to_target_label():
    rng = np.random.default_rng(0)
    # Source: 3-label multilabel where column 1 is driven by feature 0; target: binary task
    # whose label is the same signal.
    xs = rng.normal(size=(400, 5))
    ys = np.stack([rng.integers(0, 2, 400), (xs[:, 0] > 0), rng.integers(0, 2, 400)], 1)
    xt = rng.normal(size=(200, 5))
    yt = (xt[:, 0] > 0).astype(int)
    r = transfer_head((xs, ys.astype(float)), (xt, yt), "multilabel", {1: 1},
                      target_task="binary", Cs=(1.0,))
    assert r.metrics["macro_auc"] > 0.95
    wrong = transfer_head((xs, ys.astype(float)), (xt, yt), "multilabel", {0: 1},
                          target_task="binary", Cs=(1.0,))
    assert wrong.metrics["macro_auc"] < 0.7
    with pytest.raises(ValueError, match="single C"):
        transfer_head((xs, ys), (xt, yt), "multilabel", {1: 1}, target_task="binary")


def test_map_scores_multiclass_renormalises_and_rejects_gaps():
    p = np.array([[0.2, 0.3, 0.5]])
    out = map_scores(p, "multiclass", {2: 0, 0: 1}, "multiclass", 2)
    np.testing.assert_allclose(out, [[0.5 / 0.7, 0.2 / 0.7]])
    with pytest.raises(ValueError, match="no source class"):
        map_scores(p, "multiclass", {2: 0}, "multiclass", 2)


@pytest.mark.parametrize("probe, kwargs", [(logistic_probe, {}), (knn_probe, {}),
                                           # 300 rows = 2 steps/epoch: the default lr is too slow
                                           (torch_linear_probe, {"lr": 1e-2, "epochs": 30})])
def test_multiclass_probes_keep_a_column_for_an_absent_class(probe, kwargs):
    rng = np.random.default_rng(0)
    centers = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])

    def blobs(n):
        y = rng.integers(0, 3, n)
        return centers[y] + rng.normal(size=(n, 3)), y

    names = ["a", "b", "c", "never_seen"]
    r = probe(blobs(300), blobs(100), blobs(100), "multiclass", label_names=names,
              **kwargs)
    assert r.test_scores.shape == (100, 4)
    np.testing.assert_allclose(r.test_scores.sum(axis=1), 1.0, atol=1e-6)
    assert r.metrics["per_class_auc"]["never_seen"] is None
    assert r.metrics["macro_auc"] > 0.95 and r.metrics["accuracy"] > 0.85
