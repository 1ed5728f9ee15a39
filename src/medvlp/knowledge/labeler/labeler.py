"""The offline chest X-ray report labeler: report text -> UMS, no model involved.

Pipeline per report: sections (findings, impression) -> sentences (with offsets) -> finding
mentions (:mod:`.vocabulary`) -> polarity of each mention (:mod:`.negex`) -> one state per
finding, then normal statements ("heart size is normal") fill findings no sentence named.

Aggregation over a report follows the CheXpert labeler: a finding is ``present`` if any mention
is positive, else ``uncertain`` if any is hedged, else ``absent``; a finding neither mentioned
nor implied stays ``null``. ``no_finding`` is present when no pathology (devices excluded) is
present or uncertain, absent otherwise. Every state keeps the sentences that decided it as
provenance spans.
"""
from __future__ import annotations

import re
from typing import Mapping

from medvlp.knowledge.labeler.negex import polarity
from medvlp.knowledge.labeler.sections import (DEID_TOKEN, Sentence, clean_text, split_sections,
                                               split_sentences)
from medvlp.knowledge.labeler.vocabulary import (MENTIONS, NORMAL_STATEMENTS, NOT_PATHOLOGY)
from medvlp.knowledge.ums import CXR_FINDINGS, Span, UMSRecord, build_record

LABELER_VERSION = "rules-1"
_RANK = {"present": 3, "uncertain": 2, "absent": 1}
_LEFT = re.compile(r"\bleft\b")
_RIGHT = re.compile(r"\bright\b")
_BOTH = re.compile(r"\b(?:bilateral|bilaterally|both|bibasilar|bibasal|biapical)\b")


def _normalise(sentence: str) -> str:
    return DEID_TOKEN.sub("xxxx", sentence.lower())


def label_sentences(sentences: list[Sentence]) -> tuple[dict[str, str | None], dict[str, list[Span]]]:
    """States and provenance spans of all findings from a report's sentences."""
    states: dict[str, str] = {}
    spans: dict[str, list[Span]] = {}

    def vote(finding: str, state: str, sent: Sentence) -> None:
        span = Span(section=sent.section, start=sent.start, end=sent.end, text=sent.text)
        old = states.get(finding)
        if old is None or _RANK[state] > _RANK[old]:
            states[finding], spans[finding] = state, [span]
        elif state == old and span not in spans[finding]:
            spans[finding].append(span)

    lowered = [_normalise(s.text) for s in sentences]
    for sent, low in zip(sentences, lowered):
        for mention in MENTIONS:
            for m in mention.pattern.finditer(low):
                vote(mention.finding, polarity(low, m.start(), m.end(), hedged=mention.hedged), sent)
    # Normal statements are weaker than any mention: they only fill findings never named.
    named = set(states)
    for sent, low in zip(sentences, lowered):
        for statement in NORMAL_STATEMENTS:
            if statement.pattern.search(low):
                for finding in statement.findings:
                    if finding not in named:
                        vote(finding, "absent", sent)
    if sentences:
        abnormal = [f for f, s in states.items() if f not in NOT_PATHOLOGY and s != "absent"]
        states["no_finding"] = "absent" if abnormal else "present"
        spans["no_finding"] = ([spans[abnormal[0]][0]] if abnormal else
                               [Span(section=s.section, start=s.start, end=s.end, text=s.text)
                                for s in sentences if any(
                                    st.pattern.search(_normalise(s.text)) for st in NORMAL_STATEMENTS)][:3])
    return dict(states), spans


def _laterality(states: Mapping[str, str | None], spans: Mapping[str, list[Span]]) -> str | None:
    # Side of the positive findings only ("no left effusion" says nothing about a side).
    text = " ".join(sp.text.lower() for f, st in states.items() if st == "present"
                    and f not in NOT_PATHOLOGY for sp in spans.get(f, []))
    if not text:
        return None
    if _BOTH.search(text) or (_LEFT.search(text) and _RIGHT.search(text)):
        return "bilateral"
    if _LEFT.search(text):
        return "left"
    if _RIGHT.search(text):
        return "right"
    return None


def label_report(findings: object = None, impression: object = None, *, text: object = None,
                 record_id: str | None = None, input_path: str | None = None) -> UMSRecord:
    """Label one chest X-ray report.

    Pass the ``findings`` and ``impression`` sections, or a free ``text`` (its FINDINGS: /
    IMPRESSION: headers are honoured). An empty report gives all findings null and the verdict
    "empty report" - never an invented answer.
    """
    sections: dict[str, str] = {}
    if text is not None and clean_text(text):
        sections.update(split_sections(str(text)))
    for name, value in (("findings", findings), ("impression", impression)):
        if clean_text(value):
            sections[name] = clean_text(value)
    sentences = [s for name, body in sections.items() for s in split_sentences(body, name)]
    source = f"rules:{LABELER_VERSION}"
    if not sentences:
        return build_record({}, modality="CXR", anatomy=["chest"], source=source,
                            vocabulary=CXR_FINDINGS, record_id=record_id, input_path=input_path,
                            unanswerable_reason="empty report")
    states, spans = label_sentences(sentences)
    return build_record(states, modality="CXR", anatomy=["chest"], source=source,
                        vocabulary=CXR_FINDINGS, record_id=record_id, spans=spans,
                        laterality=_laterality(states, spans), input_path=input_path,
                        extensions={"sections": sections})
