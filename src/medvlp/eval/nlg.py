"""Text-generation metrics written in the library (no downloads): BLEU-n and ROUGE-1/ROUGE-L.

Conventions follow the M3D benchmark scripts (``Bench/eval/eval_caption.py``), which call
Hugging Face ``evaluate`` per sample and average:

- tokenisation: lower-case, words and single punctuation marks (close to sacrebleu's ``13a``);
- BLEU-n (Papineni et al. 2002): ``BP * exp(sum_{i<=n} log p_i / n)`` with clipped n-gram
  precisions ``p_i`` and brevity penalty ``BP = 1 if c > r else exp(1 - r / c)`` (c = candidate
  length, r = reference length; the closest reference length with several references);
  unsmoothed, so a zero precision gives BLEU 0, exactly as ``evaluate``'s default;
- ROUGE-1 / ROUGE-L F-measure (Lin 2004): unigram overlap, and the longest common subsequence
  ``P = LCS/|cand|, R = LCS/|ref|, F = 2PR/(P+R)``.

METEOR needs WordNet data and BERTScore a pretrained model: :func:`optional_metrics` computes
them only when their packages (and data) are importable here, and says why not otherwise.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

_TOKEN = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*|[^\sa-z0-9]")


def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (``"3.5 mm."`` -> ``["3.5", "mm", "."]``)."""
    return _TOKEN.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def _bleu_stats(cand: list[str], refs: list[list[str]], max_order: int) -> tuple[list[int], list[int], int, int]:
    matches, totals = [0] * max_order, [0] * max_order
    for n in range(1, max_order + 1):
        c = _ngrams(cand, n)
        ref_max: Counter = Counter()
        for r in refs:
            ref_max |= _ngrams(r, n)
        matches[n - 1] = sum(min(cnt, ref_max[g]) for g, cnt in c.items())
        totals[n - 1] = max(len(cand) - n + 1, 0)
    # closest reference length; ties go to the shorter one, as in sacrebleu / nltk
    ref_len = min((abs(len(r) - len(cand)), len(r)) for r in refs)[1]
    return matches, totals, len(cand), ref_len


def _bleu_from_stats(matches, totals, cand_len: int, ref_len: int, max_order: int) -> float:
    if cand_len == 0 or any(m == 0 for m in matches[:max_order]):
        return 0.0
    log_p = sum(math.log(m / t) for m, t in zip(matches[:max_order], totals[:max_order])) / max_order
    bp = 1.0 if cand_len > ref_len else math.exp(1.0 - ref_len / cand_len)
    return bp * math.exp(log_p)


def _as_refs(reference: str | Sequence[str]) -> list[list[str]]:
    refs = [reference] if isinstance(reference, str) else list(reference)
    if not refs:
        raise ValueError("BLEU needs at least one reference per candidate")
    return [tokenize(r) for r in refs]


def sentence_bleu(candidate: str, reference: str | Sequence[str], max_order: int = 4) -> float:
    """BLEU-``max_order`` of one candidate against one or more references (no smoothing)."""
    return _bleu_from_stats(*_bleu_stats(tokenize(candidate), _as_refs(reference), max_order), max_order)


def corpus_bleu(candidates: Sequence[str], references: Sequence[str | Sequence[str]],
                max_order: int = 4) -> float:
    """Corpus BLEU: n-gram counts and lengths summed over all pairs before the geometric mean."""
    _check_lengths(candidates, references)
    m_sum, t_sum, c_sum, r_sum = [0] * max_order, [0] * max_order, 0, 0
    for cand, ref in zip(candidates, references):
        m, t, c, r = _bleu_stats(tokenize(cand), _as_refs(ref), max_order)
        m_sum = [a + b for a, b in zip(m_sum, m)]
        t_sum = [a + b for a, b in zip(t_sum, t)]
        c_sum, r_sum = c_sum + c, r_sum + r
    return _bleu_from_stats(m_sum, t_sum, c_sum, r_sum, max_order)


def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def _f(overlap: int, n_cand: int, n_ref: int) -> float:
    if overlap == 0 or n_cand == 0 or n_ref == 0:
        return 0.0
    p, r = overlap / n_cand, overlap / n_ref
    return 2 * p * r / (p + r)


def rouge_l(candidate: str, reference: str) -> float:
    """ROUGE-L F-measure from the longest common subsequence of the token lists."""
    c, r = tokenize(candidate), tokenize(reference)
    return _f(_lcs(c, r), len(c), len(r))


def rouge_1(candidate: str, reference: str) -> float:
    """ROUGE-1 F-measure from clipped unigram overlap."""
    c, r = Counter(tokenize(candidate)), Counter(tokenize(reference))
    return _f(sum((c & r).values()), sum(c.values()), sum(r.values()))


def _check_lengths(a: Sequence, b: Sequence) -> None:
    if len(a) != len(b):
        raise ValueError(f"{len(a)} candidates but {len(b)} references: expected one reference "
                         "(or list of references) per candidate")


def nlg_metrics(candidates: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """M3D-style means over samples of sentence BLEU-1, BLEU-4, ROUGE-1 and ROUGE-L, plus corpus
    BLEU-4; every value in [0, 1]."""
    _check_lengths(candidates, references)
    if not candidates:
        raise ValueError("nlg_metrics: no candidates")
    n = len(candidates)
    out = {
        "bleu1": sum(sentence_bleu(c, r, 1) for c, r in zip(candidates, references)) / n,
        "bleu4": sum(sentence_bleu(c, r, 4) for c, r in zip(candidates, references)) / n,
        "corpus_bleu4": corpus_bleu(candidates, references, 4),
        "rouge1": sum(rouge_1(c, r) for c, r in zip(candidates, references)) / n,
        "rougeL": sum(rouge_l(c, r) for c, r in zip(candidates, references)) / n,
        "n": n,
    }
    return out


def optional_metrics(candidates: Sequence[str], references: Sequence[str]) -> dict[str, object]:
    """METEOR (nltk + WordNet data) and BERTScore (bert_score + a cached model) when available.

    Returns ``{"meteor": value | None, "bertscore_f1": value | None, "unavailable": {name: why}}``;
    nothing is downloaded.
    """
    out: dict[str, object] = {"meteor": None, "bertscore_f1": None, "unavailable": {}}
    try:
        from nltk.translate.meteor_score import meteor_score

        vals = [meteor_score([tokenize(r)], tokenize(c)) for c, r in zip(candidates, references)]
        out["meteor"] = sum(vals) / max(len(vals), 1)
    except Exception as e:  # ImportError, or LookupError when the WordNet corpus is missing
        out["unavailable"]["meteor"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    try:
        import bert_score  # noqa: F401
        out["unavailable"]["bertscore_f1"] = ("bert_score is installed but its model would be "
                                             "downloaded; not run offline")
    except ImportError:
        out["unavailable"]["bertscore_f1"] = "package bert_score not installed"
    return out
