"""Closed-VQA letter rule (M3D) with exact-match fallback; open-VQA metrics."""
from __future__ import annotations

import pytest

from medvlp.eval.vqa import closed_correct, closed_vqa_accuracy, open_vqa_metrics


def test_letter_rule():
    assert closed_correct("B. hyperplasia", "B", "hyperplasia") == (True, "letter")
    assert closed_correct("The answer is B. hyperplasia", "B", "hyperplasia") == (True, "letter")
    assert closed_correct("A. normal", "B", "hyperplasia") == (False, "letter")
    # a letter-dot answer is judged by the letter even if the text names the right choice
    assert closed_correct("A. hyperplasia", "B", "hyperplasia") == (False, "letter")


def test_exact_fallback_only_without_letters():
    assert closed_correct("hyperplasia", "B", "hyperplasia") == (True, "exact")
    assert closed_correct("Hyperplasia.", "B", "hyperplasia") == (True, "exact")
    assert closed_correct("b", "B", "hyperplasia") == (True, "exact")
    assert closed_correct("normal", "B", "hyperplasia") == (False, "exact")
    with pytest.raises(ValueError):
        closed_correct("B.", "b", "x")


def test_accuracy_and_fallback_share():
    r = closed_vqa_accuracy(["B. x", "A. y", "x"], ["B", "B", "B"], ["x", "x", "x"])
    assert r["accuracy"] == pytest.approx(2 / 3)
    assert r["exact_fallback"] == pytest.approx(1 / 3)


def test_open_metrics_exact_match():
    r = open_vqa_metrics(["liver, spleen", "colon"], ["liver, spleen", "stomach"])
    assert r["exact_match"] == 0.5
    assert r["bleu1"] == pytest.approx(0.5)
