"""The teacher protocol and the verified structuring loop shared by every LLM backend.

A teacher only turns a prompt into text. Everything that makes its answer trustworthy lives
here, once: the prompt, the JSON schema of the answer, JSON extraction, validation, retries
with the validation error fed back into the prompt, the cache, and - after ``max_attempts``
invalid answers - an *unanswerable* record that states why. Values are compiled into UMS by
:func:`medvlp.knowledge.ums.build_record`; the LLM never writes the UMS record itself.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from medvlp.errors import MedvlpError
from medvlp.knowledge.teachers.cache import AnswerCache, cache_key
from medvlp.knowledge.ums import STATES, UMSRecord, build_record


class TeacherError(MedvlpError):
    """A teacher could not produce any text (server down, timeout after retries, ...)."""


class AnswerError(ValueError):
    """A teacher's text is not a valid answer; the message is fed back in the retry prompt."""


@runtime_checkable
class Teacher(Protocol):
    """Anything that maps a prompt (and the answer's JSON schema) to text.

    ``name`` identifies the model in the cache key and in provenance; ``concurrency`` is how many
    prompts may be in flight at once (1 for a local model).
    """

    name: str
    concurrency: int

    def generate(self, prompt: str, schema: dict[str, Any]) -> str: ...


def answer_schema(findings: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """JSON schema of a teacher's answer: a state (or null) for every finding, plus laterality."""
    state = {"enum": [*STATES, None]}
    return {
        "type": "object",
        "properties": {
            "findings": {"type": "object", "properties": {f: state for f in findings},
                         "required": list(findings), "additionalProperties": False},
            "laterality": {"enum": ["left", "right", "bilateral", None]},
        },
        "required": ["findings", "laterality"],
        "additionalProperties": False,
    }


REPORT_OPEN, REPORT_CLOSE = "<report>", "</report>"


def build_prompt(report: str, findings: list[str] | tuple[str, ...], error: str | None = None) -> str:
    """The instruction for one report. On a retry ``error`` says what was wrong last time."""
    lines = [
        "You label chest X-ray reports. For each finding answer \"present\", \"absent\", "
        "\"uncertain\" (hedged: may, possible, versus) or null (the report does not say).",
        "Normal statements count: \"heart size is normal\" means cardiomegaly is absent.",
        "Do not guess: a finding the report does not address is null.",
        "Answer with one JSON object only, exactly this shape:",
        json.dumps({"findings": {f: "present|absent|uncertain|null" for f in findings},
                    "laterality": "left|right|bilateral|null"}),
        f"{REPORT_OPEN}{report}{REPORT_CLOSE}",
    ]
    if error:
        lines.append(f"Your previous answer was invalid: {error}. Answer again with valid JSON.")
    return "\n".join(lines)


_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.S)


def extract_json(text: str) -> Any:
    """The first JSON object in a generation (code fences and chatter around it are ignored)."""
    fenced = _FENCE.search(text)
    if fenced:
        text = fenced.group(1)
    start = text.find("{")
    if start < 0:
        raise AnswerError("no JSON object in the answer")
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError as e:
        raise AnswerError(f"malformed JSON ({e.msg} at char {e.pos})") from e
    return obj


def parse_answer(text: str, findings: list[str] | tuple[str, ...]) -> tuple[dict[str, str | None], str | None]:
    """Validate an answer against :func:`answer_schema`; return (states, laterality)."""
    obj = extract_json(text)
    if not isinstance(obj, dict) or not isinstance(obj.get("findings"), dict):
        raise AnswerError('expected an object with a "findings" object')
    got = obj["findings"]
    missing = [f for f in findings if f not in got]
    extra = [k for k in got if k not in findings]
    if missing or extra:
        raise AnswerError(f"findings keys wrong: missing {missing}, unexpected {extra}")
    states: dict[str, str | None] = {}
    for f in findings:
        v = got[f]
        v = None if v in (None, "null") else v
        if v is not None and v not in STATES:
            raise AnswerError(f"finding {f!r} has state {v!r}; use present, absent, uncertain or null")
        states[f] = v
    lat = obj.get("laterality")
    lat = None if lat in (None, "null") else lat
    if lat not in (None, "left", "right", "bilateral"):
        raise AnswerError(f"laterality {lat!r}; use left, right, bilateral or null")
    return states, lat


@dataclass
class TeacherStats:
    """Counters of one structuring run with a teacher."""

    calls: int = 0
    invalid: int = 0
    transport_errors: int = 0
    unanswerable: int = 0


def structure_with_teacher(teacher: Teacher, report: str, findings: list[str] | tuple[str, ...], *,
                           record_id: str | None = None, cache: AnswerCache | None = None,
                           max_attempts: int = 3, stats: TeacherStats | None = None,
                           modality: str = "CXR", anatomy: list[str] | None = None) -> UMSRecord:
    """Ask ``teacher`` about one report and return a verified UMS record - never raises for a
    bad answer or a dead server: after ``max_attempts`` the record is unanswerable with the
    last failure as its reason."""
    stats = stats if stats is not None else TeacherStats()
    source = f"teacher:{teacher.name}"
    common = dict(modality=modality, anatomy=anatomy if anatomy is not None else ["chest"],
                  source=source, vocabulary=findings, record_id=record_id)
    if not report.strip():
        return build_record({}, unanswerable_reason="empty report", **common)
    schema = answer_schema(findings)
    error: str | None = None
    all_cached = True
    for attempt in range(1, max_attempts + 1):
        prompt = build_prompt(report, findings, error)
        key = cache_key(teacher.name, prompt, schema)
        text = cache.get(key) if cache is not None else None
        if text is None:
            all_cached = False
            stats.calls += 1
            try:
                text = teacher.generate(prompt, schema)
            except TeacherError as e:
                stats.transport_errors += 1
                error = f"teacher error: {e}"
                continue
            if cache is not None:
                cache.put(key, teacher.name, text)
        try:
            states, laterality = parse_answer(text, findings)
        except AnswerError as e:
            stats.invalid += 1
            error = str(e)
            continue
        record = build_record(states, laterality=laterality, **common)
        record.provenance.attempts = attempt
        record.provenance.cached = all_cached
        return record
    stats.unanswerable += 1
    record = build_record({}, unanswerable_reason=f"no valid answer after {max_attempts} "
                          f"attempts; last: {error}", **common)
    record.provenance.attempts = max_attempts
    return record
