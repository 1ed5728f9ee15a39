"""NegEx-style negation and uncertainty scopes.

For a mention inside a sentence, the *clause* around it is cut at termination words
("but", "however", "which", ";" ...), so in "Streaky opacity, which may represent atelectasis"
the hedge touches only atelectasis. Then, within the clause:

* **negated** when a negation trigger ("no", "without", "negative for", "free of", ...) occurs
  between the clause start and the mention end ("heart is not enlarged" puts the trigger inside
  the mention), or a post-negation phrase ("is not seen", "has resolved") follows the mention;
* **uncertain** when a hedge ("may", "possible", "versus", "cannot be excluded", ...) occurs in
  the clause before the mention or a post-hedge follows it.

Hedges that contain a negation word ("cannot be excluded", "not ruled out") are matched first
and removed, so their "not" is not read as a negation. Pseudo-negations ("no change",
"not only") are removed before looking for triggers. When a mention is both negated and hedged
("no definite effusion") negation wins, as in the CheXpert labeler.
"""
from __future__ import annotations

import re
from typing import Literal

Polarity = Literal["present", "absent", "uncertain"]

TERMINATION = re.compile(
    r"\b(?:but|however|although|though|except|aside from|apart from|otherwise|which|whereas|"
    r"while|with the exception of|nevertheless)\b|[;:]|\bwith\b(?= "
    r"(?:a |an |the |mild |small |large |moderate |new |possible |probable )?\w+ "
    r"(?:is|are|was|were|seen|noted))")
PSEUDO_NEGATION = re.compile(
    r"\bno (?:significant |substantial |appreciable |interval |definite )?(?:interval )?change\b|"
    r"\bwithout (?:significant |interval )?change\b|\bnot (?:only|necessarily|significantly "
    r"changed)\b|\bno increase\b|\bnot (?:well )?(?:assessed|evaluated)\b|\bunchanged\b")
NEG_HEDGE = re.compile(
    r"\b(?:can ?not|cannot|can't|could not|may not|difficult to|unable to)(?: be)?(?: \w+){0,2} "
    r"(?:exclude|excluded|rule out|ruled out)\b|\bnot (?:be )?(?:entirely |completely |totally )?"
    r"(?:excluded|ruled out)\b|\bnot (?:clearly |well )?(?:seen|visualized) (?:but|although)\b")
PRE_NEGATION = re.compile(
    r"\b(?:no|not|without|negative|free of|clear of|absence of|absent|resolution of|resolved|"
    r"rather than|none|nor|neither|never)\b")
POST_NEGATION = re.compile(
    r"^(?:[\w-]+ ){0,3}?(?:is |are |was |were |has been |have been )?(?:not (?:seen|identified|"
    r"present|visualized|appreciated|demonstrated|evident|noted|detected|visible|apparent)|"
    r"absent|(?:has |have )?resolved|cleared|no longer (?:seen|visible|present))\b")
HEDGE = re.compile(
    r"\b(?:may|might|could|possible|possibly|probable|probably|likely|questionable|question of|"
    r"suspicious|suspect|suspected|suspicion|concerning|worrisome|versus|vs|either|borderline|"
    r"apparent|apparently|equivocal|suggest|suggests|suggestive|suggesting|consider|presumed|"
    r"presumably|favor|favored|favour|indeterminate|perhaps|uncertain|cannot exclude|rule out|"
    r"differential|to exclude|history of|correlate|or)\b|\?")
POST_HEDGE = re.compile(
    r"^(?:[\w-]+ ){0,2}?(?:is |are |was |were )?(?:possible|possibly|suspected|questionable|"
    r"versus|vs|likely|not excluded|could be|may be present|or)\b")


def clause_bounds(sentence: str, start: int, end: int) -> tuple[int, int]:
    """The clause of ``sentence`` containing ``[start, end)``, cut at termination terms."""
    left, right = 0, len(sentence)
    for m in TERMINATION.finditer(sentence):
        if m.end() <= start:
            left = m.end()
        elif m.start() >= end and right == len(sentence):
            right = m.start()
    return left, right


def _blank(text: str, pattern: re.Pattern[str]) -> str:
    # Same length keeps offsets valid while hiding the matched phrase from later patterns.
    return pattern.sub(lambda m: " " * len(m.group(0)), text)


def polarity(sentence: str, start: int, end: int, *, hedged: bool = False) -> Polarity:
    """Classify the mention at ``[start, end)`` of a lower-cased sentence."""
    left, right = clause_bounds(sentence, start, end)
    clause = _blank(sentence, PSEUDO_NEGATION)
    neg_hedge = bool(NEG_HEDGE.search(clause, left, right))
    clause = _blank(clause, NEG_HEDGE)
    before = clause[left:end]
    after = clause[end:right].lstrip(" ,")
    if PRE_NEGATION.search(before) or POST_NEGATION.search(after):
        return "absent"
    if hedged or neg_hedge or HEDGE.search(clause[left:start]) or POST_HEDGE.search(after):
        return "uncertain"
    return "present"
