"""Report sections, de-identification tokens and sentence splitting with character offsets."""
from __future__ import annotations

import re
from dataclasses import dataclass

#: Open-i replaces every de-identified word (names, dates, and many ordinary words) by ``XXXX``.
#: The labeler reads it as an unknown word: it neither negates nor asserts anything.
DEID_TOKEN = re.compile(r"\bX{2,}\b")

_HEADER = re.compile(r"(?im)^\s*(findings|impression|conclusion|indication|comparison|history|"
                     r"technique)\s*:\s*")
# A sentence ends at . ! ? (not a decimal point as in "2.5 cm") or at a run of dots ("stable..").
_SENTENCE = re.compile(r"(?:[^.!?]|(?<=\d)\.(?=\d))+(?:[.!?]+|$)")
_NUMBERING = re.compile(r"^\s*\(?\d{1,2}[.)]\s*")


@dataclass(frozen=True)
class Sentence:
    """A sentence of one section; ``start``/``end`` index into the section text."""

    section: str
    start: int
    end: int
    text: str


def clean_text(value: object) -> str:
    """None/NaN/whitespace -> ""; otherwise the text with normalised whitespace (same length
    is not needed: offsets refer to the cleaned text, which is what provenance stores)."""
    if value is None or (isinstance(value, float) and value != value):
        return ""
    return re.sub(r"\s+", " ", str(value)).strip()


def split_sections(text: str) -> dict[str, str]:
    """Split a free report with ``FINDINGS:`` / ``IMPRESSION:`` headers into sections.

    Text before any header is kept as ``"text"``; CONCLUSION counts as impression. Indication,
    comparison, history and technique are dropped: they state why the study was done ("rule
    out pneumonia"), not what it showed.
    """
    parts: dict[str, str] = {}
    matches = list(_HEADER.finditer(text))
    if not matches:
        return {"text": clean_text(text)} if clean_text(text) else {}
    if clean_text(text[:matches[0].start()]):
        parts["text"] = clean_text(text[:matches[0].start()])
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(text)
        name = m.group(1).lower()
        name = "impression" if name == "conclusion" else name
        if name in ("findings", "impression"):
            body = clean_text(text[m.end():end])
            if body:
                parts[name] = (parts[name] + " " + body) if name in parts else body
    return parts


def split_sentences(text: str, section: str) -> list[Sentence]:
    """Sentences with offsets; list numbering ("1. ") is skipped, empty pieces dropped."""
    out: list[Sentence] = []
    for m in _SENTENCE.finditer(text):
        start, end = m.start(), m.end()
        lead = _NUMBERING.match(text, start, end)
        if lead:
            start = lead.end()
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        piece = text[start:end]
        if any(c.isalpha() for c in DEID_TOKEN.sub("", piece)):
            out.append(Sentence(section, start, end, piece))
    return out
