"""BLEU / ROUGE against values computed by hand on known sentence pairs."""
from __future__ import annotations

import math

import pytest

from medvlp.eval.nlg import corpus_bleu, nlg_metrics, optional_metrics, rouge_1, rouge_l, sentence_bleu, tokenize

CAND, REF = "the cat sat on the mat", "the cat is on the mat"


def test_tokenize_lowercases_and_splits_punctuation():
    assert tokenize("Liver: 3.5 cm, Right.") == ["liver", ":", "3.5", "cm", ",", "right", "."]


def test_bleu_hand_computed():
    # clipped precisions: 1-gram 5/6, 2-gram 3/5, 3-gram 1/4, 4-gram 0/3; equal lengths -> BP 1
    assert sentence_bleu(CAND, REF, 1) == pytest.approx(5 / 6)
    assert sentence_bleu(CAND, REF, 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert sentence_bleu(CAND, REF, 3) == pytest.approx((5 / 6 * 3 / 5 * 1 / 4) ** (1 / 3))
    assert sentence_bleu(CAND, REF, 4) == 0.0  # unsmoothed, as evaluate's default
    # p = 4/5, 3/4, 2/3, 1/2
    assert sentence_bleu("a b c d e", "a b c d f", 4) == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    assert sentence_bleu(REF, REF, 4) == pytest.approx(1.0)


def test_bleu_brevity_penalty():
    # 2 candidate words vs 6 reference words: p1 = 1, BP = exp(1 - 6/2)
    assert sentence_bleu("the cat", REF, 1) == pytest.approx(math.exp(-2))
    # longer candidate: no penalty, precision 6/8
    assert sentence_bleu("the cat is on the mat today ok", REF, 1) == pytest.approx(6 / 8)


def test_bleu_clips_repeated_words():
    # "the the the" vs "the cat": clipped count 1 of 3; BP 1 (3 > 2)
    assert sentence_bleu("the the the", "the cat", 1) == pytest.approx(1 / 3)


def test_corpus_bleu_sums_counts_before_the_mean():
    # pair 1: p1 5/6 (6 words); pair 2: p1 2/2 (2 words, ref 2) -> 7/8 overall, lengths 8 vs 8
    assert corpus_bleu([CAND, "a b"], [REF, "a b"], 1) == pytest.approx(7 / 8)
    with pytest.raises(ValueError):
        corpus_bleu([CAND], [REF, REF])


def test_rouge_hand_computed():
    assert rouge_l(CAND, REF) == pytest.approx(5 / 6)          # LCS "the cat on the mat"
    assert rouge_1(CAND, REF) == pytest.approx(5 / 6)
    ref = "police killed the gunman"
    assert rouge_l("police kill the gunman", ref) == pytest.approx(3 / 4)
    assert rouge_l("the gunman kill police", ref) == pytest.approx(2 / 4)
    # unequal lengths: LCS 2, P = 2/2, R = 2/4 -> F = 2/3
    assert rouge_l("police gunman", ref) == pytest.approx(2 / 3)
    assert rouge_l("", ref) == 0.0


def test_nlg_metrics_means_and_optional_metrics_say_why():
    m = nlg_metrics([CAND, REF], [REF, REF])
    assert m["bleu1"] == pytest.approx((5 / 6 + 1) / 2)
    assert m["rougeL"] == pytest.approx((5 / 6 + 1) / 2)
    opt = optional_metrics([CAND], [REF])
    for key in ("meteor", "bertscore_f1"):
        assert opt[key] is not None or key in opt["unavailable"]
