from medvlp.data import load_dataset
from medvlp.eval.probe import raw_pixel_probe


def test_raw_pixel_floor_matches_the_measured_anchor():
    # ANCHORS.md: logistic regression on standardised raw pixels, C=0.01, BreastMNIST test 0.828 / 0.808.
    res = raw_pixel_probe(load_dataset("breastmnist"), seed=0)
    assert abs(res.metrics["macro_auc"] - 0.828) < 0.01
    assert abs(res.metrics["accuracy"] - 0.808) < 0.02
    assert res.chosen["C"] == 0.01
