"""Unified Medical Schema (UMS): the record, its verifier and its canonical JSON rendering.

A UMS record says, for every finding of a vocabulary, whether it is ``present``, ``absent``,
``uncertain`` or unknown (``null``), and whether the source could answer at all
(``answerability``). The principles (METHODS.md 1.3):

* missing keys are never dropped, only written as ``null``; ``null`` is the formal "unanswerable";
* values come from deterministic compilers (label tables, the rule labeler, or a verified
  teacher answer), never copied free-form from an LLM;
* every record carries its ``provenance`` and the ``verifier`` verdict.

Consistency rules checked by :func:`verify` (and relied upon by answerability-aware masking):

* ``answerability[f] is True``  <=>  ``findings[f].state is not None``;
* ``uncertainty[f] is True``    <=>  ``findings[f].state == "uncertain"``; it is ``None`` when
  ``f`` is not answerable, ``False`` otherwise.
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from medvlp.errors import DataError

SCHEMA_VERSION = "ums-0.2"

State = Literal["present", "absent", "uncertain"]
STATES: tuple[str, ...] = ("present", "absent", "uncertain")
Laterality = Literal["left", "right", "bilateral"]
StudyView = Literal["AP", "PA", "LAT"]
Role = Literal["positive", "abstain", "negative-only", "drop"]

#: The chest X-ray finding vocabulary: CheXpert's 14 labels, NIH ChestX-ray14's 14 labels (the
#: shared ones once) and common IU X-ray findings. Snake-case names are the UMS keys; this order
#: is the canonical order of the ``findings`` object in the rendered JSON.
CXR_FINDINGS: tuple[str, ...] = (
    "no_finding", "enlarged_cardiomediastinum", "cardiomegaly", "lung_opacity", "lung_lesion",
    "edema", "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural_effusion",
    "pleural_other", "fracture", "support_devices",
    "infiltration", "mass", "nodule", "emphysema", "fibrosis", "pleural_thickening", "hernia",
    "granuloma", "calcification", "scoliosis", "hyperinflation", "degenerative_changes",
)

#: The 12 CheXpert labels VIVID-Med trains on (No Finding and Pleural Other dropped).
VIVID_FINDINGS: tuple[str, ...] = (
    "enlarged_cardiomediastinum", "cardiomegaly", "lung_opacity", "lung_lesion", "edema",
    "consolidation", "pneumonia", "atelectasis", "pneumothorax", "pleural_effusion", "fracture",
    "support_devices",
)

#: HAM10000's 7 dermoscopic diagnoses, as UMS keys (code in the metadata -> key in compilers.py).
HAM10000_FINDINGS: tuple[str, ...] = (
    "actinic_keratosis", "basal_cell_carcinoma", "benign_keratosis", "dermatofibroma",
    "melanoma", "melanocytic_nevus", "vascular_lesion",
)

_TOP_LEVEL_ORDER = ("schema_version", "modality", "anatomy", "findings", "laterality", "study_view",
                    "geometry", "measurements", "answerability", "uncertainty", "provenance",
                    "verifier", "extensions")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Finding(_Strict):
    """One finding slot: ``state`` null means unanswerable; ``score`` is an optional confidence."""

    state: State | None = None
    score: float | None = Field(default=None, ge=0.0, le=1.0)


class Span(_Strict):
    """The text that produced a state: ``section`` (findings/impression/text), char offsets into
    that section's text, and the sentence itself."""

    section: str
    start: int = Field(ge=0)
    end: int = Field(ge=0)
    text: str


class Provenance(_Strict):
    """Where a record came from: the compiler or teacher (``source``), the record id, the input
    file, and per finding the sentence spans that decided it."""

    source: str
    record_id: str | None = None
    input: str | None = None
    spans: dict[str, list[Span]] = Field(default_factory=dict)
    attempts: int | None = None
    cached: bool | None = None


class Verifier(_Strict):
    """The verifier's verdict. ``pass`` is a Python keyword, so the attribute is ``passed``."""

    passed: bool = Field(alias="pass")
    failure_type: str | None = None
    reason: str | None = None
    confidence: float | None = Field(default=None, ge=0.0, le=1.0)
    role: Role = "positive"


class Geometry(_Strict):
    bbox: list[float] | None = None
    mask: str | None = None
    keypoints: list[list[float]] | None = None


class Measurement(_Strict):
    name: str
    value: float | None = None
    unit: str | None = None
    state: State | None = None
    spacing_source: str | None = None


class UMSRecord(_Strict):
    """A UMS v0.2 record (METHODS.md 1.3)."""

    schema_version: str = SCHEMA_VERSION
    modality: str | None
    anatomy: list[str] = Field(default_factory=list)
    findings: dict[str, Finding]
    laterality: Laterality | None = None
    study_view: StudyView | None = None
    geometry: Geometry | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    answerability: dict[str, bool]
    uncertainty: dict[str, bool | float | None]
    provenance: Provenance
    verifier: Verifier
    extensions: dict[str, Any] = Field(default_factory=dict)

    @property
    def states(self) -> dict[str, str | None]:
        """``{finding: state}`` with None for unanswerable slots."""
        return {k: v.state for k, v in self.findings.items()}


class VerificationError(DataError):
    """A UMS record broke the schema, an enum or the answerability rules."""


def build_record(states: dict[str, str | None], *, modality: str | None, source: str,
                 vocabulary: tuple[str, ...] | list[str] | None = None,
                 anatomy: list[str] | None = None, record_id: str | None = None,
                 study_view: str | None = None, laterality: str | None = None,
                 spans: dict[str, list[Span]] | None = None, input_path: str | None = None,
                 unanswerable_reason: str | None = None,
                 extensions: dict[str, Any] | None = None) -> UMSRecord:
    """Compile ``{finding: state-or-None}`` into a full, consistent UMS record.

    Every name of ``vocabulary`` gets a slot (missing ones become null, never dropped), then any
    extra names of ``states`` follow. With ``unanswerable_reason`` every slot is null and the
    verifier verdict says why (e.g. "empty report", or a teacher's last validation error).
    """
    names = list(vocabulary or [])
    names += [k for k in states if k not in names]
    findings: dict[str, Finding] = {}
    for name in names:
        st = None if unanswerable_reason else states.get(name)
        if st is not None and st not in STATES:
            raise VerificationError(input_path, f"finding {name!r} has state {st!r}",
                                    f"one of {STATES} or null", record=record_id)
        findings[name] = Finding(state=st)
    answerability = {k: f.state is not None for k, f in findings.items()}
    uncertainty: dict[str, bool | float | None] = {
        k: (None if f.state is None else f.state == "uncertain") for k, f in findings.items()}
    if unanswerable_reason:
        verdict = Verifier(passed=False, failure_type="unanswerable", reason=unanswerable_reason,
                           role="abstain")
    else:
        any_present = any(f.state == "present" for f in findings.values())
        verdict = Verifier(passed=True, role="positive" if any_present else "negative-only")
    return UMSRecord(
        modality=modality, anatomy=list(anatomy or []), findings=findings,
        laterality=laterality, study_view=study_view, answerability=answerability,
        uncertainty=uncertainty,
        provenance=Provenance(source=source, record_id=record_id, input=input_path,
                              spans=dict(spans or {})),
        verifier=verdict, extensions=dict(extensions or {}))


def verify(record: UMSRecord | dict[str, Any], vocabulary: tuple[str, ...] | list[str] | None = None,
           *, path: str | None = None) -> UMSRecord:
    """Check schema, enums and answerability consistency; return the parsed record.

    Raises :class:`VerificationError` naming the record and the first broken rule.
    """
    rid = None
    if isinstance(record, dict):
        rid = (record.get("provenance") or {}).get("record_id") if isinstance(
            record.get("provenance"), dict) else None
        try:
            record = UMSRecord.model_validate(record)
        except ValidationError as e:
            first = e.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise VerificationError(path, f"schema violation at {loc}: {first['msg']}",
                                    "a UMS v0.2 record", record=rid) from e
    rid = record.provenance.record_id
    if record.schema_version != SCHEMA_VERSION:
        raise VerificationError(path, f"schema_version {record.schema_version!r}",
                                repr(SCHEMA_VERSION), record=rid)
    if vocabulary is not None:
        missing = [v for v in vocabulary if v not in record.findings]
        if missing:
            raise VerificationError(path, f"findings {missing} missing (write null, never drop)",
                                    "every vocabulary finding present", record=rid)
    keys = set(record.findings)
    for name, table in (("answerability", record.answerability), ("uncertainty", record.uncertainty)):
        if set(table) != keys:
            diff = sorted(keys.symmetric_difference(table))
            raise VerificationError(path, f"{name} keys differ from findings keys: {diff}",
                                    "one entry per finding", record=rid)
    for k, f in record.findings.items():
        if record.answerability[k] != (f.state is not None):
            raise VerificationError(path, f"finding {k!r}: answerability={record.answerability[k]}"
                                    f" but state={f.state!r}",
                                    "answerable exactly when the state is not null", record=rid)
        u = record.uncertainty[k]
        if f.state is None and u is not None:
            raise VerificationError(path, f"finding {k!r}: uncertainty={u!r} for a null state",
                                    "null uncertainty for unanswerable findings", record=rid)
        if isinstance(u, bool) and u != (f.state == "uncertain"):
            raise VerificationError(path, f"finding {k!r}: uncertainty={u} but state={f.state!r}",
                                    "uncertainty true exactly when the state is 'uncertain'",
                                    record=rid)
    if not record.verifier.passed and any(record.answerability.values()) is False \
            and record.verifier.reason is None:
        raise VerificationError(path, "failed verdict without a reason", "verifier.reason",
                                record=rid)
    return record


def _finding_order(names: list[str]) -> list[str]:
    rank = {n: i for i, n in enumerate(CXR_FINDINGS + HAM10000_FINDINGS)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def to_canonical_dict(record: UMSRecord) -> dict[str, Any]:
    """The full record as a plain dict with the stable field order (top level fixed, findings in
    vocabulary order then alphabetical, nulls kept)."""
    raw = record.model_dump(mode="json", by_alias=True)
    order = _finding_order(list(raw["findings"]))
    for key in ("findings", "answerability", "uncertainty"):
        raw[key] = {n: raw[key][n] for n in order}
    raw["provenance"]["spans"] = {n: raw["provenance"]["spans"][n]
                                  for n in _finding_order(list(raw["provenance"]["spans"]))}
    return {k: raw[k] for k in _TOP_LEVEL_ORDER}


def canonical_json(record: UMSRecord, *, indent: int | None = None) -> str:
    """Deterministic JSON text of the whole record (same record -> same bytes)."""
    sep = (",", ":") if indent is None else (",", ": ")
    return json.dumps(to_canonical_dict(record), ensure_ascii=False, indent=indent, separators=sep)


def render_target(record: UMSRecord, findings: list[str] | tuple[str, ...] | None = None) -> str:
    """The reduced training target VIVID-Med decodes (METHODS.md 1.3)::

        {"modality": "CXR", "findings": {"cardiomegaly": {"state": "absent"}, ...},
         "study_view": "PA"}

    ``findings`` selects (and orders) the queried fields, e.g. from a field-query sampler; by
    default all of the record's findings in canonical order. Separators are ``", "``/``": "`` so
    the pattern ``"state": null`` appears verbatim for answerability-aware masking.
    """
    names = list(findings) if findings is not None else _finding_order(list(record.findings))
    unknown = [n for n in names if n not in record.findings]
    if unknown:
        raise VerificationError(None, f"target asks for findings {unknown} not in the record",
                                "names of the record's findings", record=record.provenance.record_id)
    body = {"modality": record.modality,
            "findings": {n: {"state": record.findings[n].state} for n in names},
            "study_view": record.study_view}
    return json.dumps(body, ensure_ascii=False)


def parse_record(text: str, *, path: str | None = None,
                 vocabulary: tuple[str, ...] | list[str] | None = None) -> UMSRecord:
    """Parse one JSON line and verify it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise VerificationError(path, f"not valid JSON ({e})", "one UMS JSON object") from e
    if not isinstance(data, dict):
        raise VerificationError(path, f"JSON {type(data).__name__} at the top level", "an object")
    return verify(data, vocabulary, path=path)
