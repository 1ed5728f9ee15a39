"""Deterministic compilers: label tables -> UMS records.

Each compiler maps one row of a label source to a :class:`~medvlp.knowledge.ums.UMSRecord`;
:func:`compile_table` runs one over a whole table. Conventions:

* CheXpert-style: ``1`` present, ``0`` absent, ``-1`` uncertain (uncertainty=true),
  blank/NaN null (answerability=false) - METHODS.md 1.3.
* NIH ChestX-ray14: the 14 labels are mined exhaustively from the report, so every label not
  listed is ``absent`` and all 14 (plus no_finding) are answerable.
* PneumoniaMNIST: 0 normal / 1 pneumonia -> ``pneumonia`` absent/present, ``no_finding``
  the opposite; the other chest findings are unknown (null).
* HAM10000: one diagnosis per lesion -> that diagnosis present, the other six absent.
* A user mapping file (YAML or JSON, :class:`LabelMapping`) for any other table.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pandas as pd
import yaml
from pydantic import Field, ValidationError

from medvlp.config import StrictConfig
from medvlp.errors import DataError
from medvlp.knowledge.ums import (CXR_FINDINGS, HAM10000_FINDINGS, UMSRecord, build_record)

#: CheXpert column -> UMS key (the 14 CheXpert labels).
CHEXPERT_COLUMNS: dict[str, str] = {
    "No Finding": "no_finding", "Enlarged Cardiomediastinum": "enlarged_cardiomediastinum",
    "Cardiomegaly": "cardiomegaly", "Lung Opacity": "lung_opacity", "Lung Lesion": "lung_lesion",
    "Edema": "edema", "Consolidation": "consolidation", "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis", "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural_effusion", "Pleural Other": "pleural_other",
    "Fracture": "fracture", "Support Devices": "support_devices",
}
#: NIH ChestX-ray14 label -> UMS key (14 labels + "No Finding").
NIH_LABELS: dict[str, str] = {
    "Atelectasis": "atelectasis", "Cardiomegaly": "cardiomegaly", "Effusion": "pleural_effusion",
    "Infiltration": "infiltration", "Mass": "mass", "Nodule": "nodule", "Pneumonia": "pneumonia",
    "Pneumothorax": "pneumothorax", "Consolidation": "consolidation", "Edema": "edema",
    "Emphysema": "emphysema", "Fibrosis": "fibrosis", "Pleural_Thickening": "pleural_thickening",
    "Hernia": "hernia", "No Finding": "no_finding",
}
#: HAM10000 ``dx`` code -> UMS key.
HAM10000_DX: dict[str, str] = dict(zip(("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
                                       HAM10000_FINDINGS))
_VIEWS = {"AP": "AP", "PA": "PA", "LL": "LAT", "LAT": "LAT", "LATERAL": "LAT", "FRONTAL": None}


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and value.strip() == ""


def chexpert_state(value: Any, *, path: str | None = None, record: str | None = None,
                   field: str = "") -> str | None:
    """1 -> present, 0 -> absent, -1 -> uncertain, blank -> None; anything else is an error."""
    if _is_blank(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    states = {1.0: "present", 0.0: "absent", -1.0: "uncertain"}
    if number not in states:
        raise DataError(path, f"column {field!r} has value {value!r}", "1, 0, -1 or blank",
                        record=record)
    return states[number]


def normalise_view(value: Any) -> str | None:
    """Map a view code (AP, PA, LL, Lateral, ...) to the UMS enum, unknown -> None."""
    if _is_blank(value):
        return None
    return _VIEWS.get(str(value).strip().upper())


def compile_chexpert(row: Mapping[str, Any], *, record_id: str | None = None,
                     path: str | None = None, view_column: str = "AP/PA") -> UMSRecord:
    """One CheXpert-style row (columns named as in :data:`CHEXPERT_COLUMNS`) -> UMS."""
    missing = [c for c in CHEXPERT_COLUMNS if c not in row]
    if len(missing) == len(CHEXPERT_COLUMNS):
        raise DataError(path, "no CheXpert label column found", f"columns {list(CHEXPERT_COLUMNS)}",
                        record=record_id)
    states = {key: chexpert_state(row.get(col), path=path, record=record_id, field=col)
              for col, key in CHEXPERT_COLUMNS.items()}
    return build_record(states, modality="CXR", anatomy=["chest"], source="chexpert",
                        vocabulary=tuple(CHEXPERT_COLUMNS.values()), record_id=record_id,
                        study_view=normalise_view(row.get(view_column)), input_path=path)


def compile_nih(finding_labels: str, *, record_id: str | None = None, path: str | None = None,
                view: str | None = None) -> UMSRecord:
    """NIH ``Finding Labels`` (``"Cardiomegaly|Effusion"`` or ``"No Finding"``) -> UMS."""
    labels = [s.strip() for s in str(finding_labels).split("|") if s.strip()]
    unknown = [s for s in labels if s not in NIH_LABELS]
    if unknown or not labels:
        raise DataError(path, f"Finding Labels {finding_labels!r} has unknown labels {unknown}",
                        f"'|'-joined names from {list(NIH_LABELS)}", record=record_id)
    if "No Finding" in labels and len(labels) > 1:
        raise DataError(path, f"'No Finding' together with other labels: {finding_labels!r}",
                        "either 'No Finding' or finding names", record=record_id)
    present = {NIH_LABELS[s] for s in labels}
    states = {key: ("present" if key in present else "absent") for key in NIH_LABELS.values()}
    return build_record(states, modality="CXR", anatomy=["chest"], source="nih_chestxray14",
                        vocabulary=tuple(NIH_LABELS.values()), record_id=record_id,
                        study_view=normalise_view(view), input_path=path)


def compile_pneumoniamnist(label: int, *, record_id: str | None = None,
                           path: str | None = None) -> UMSRecord:
    """PneumoniaMNIST label (0 normal, 1 pneumonia) -> UMS over the chest vocabulary."""
    if label not in (0, 1) or isinstance(label, bool):
        raise DataError(path, f"label {label!r}", "0 (normal) or 1 (pneumonia)", record=record_id)
    states = {"pneumonia": "present" if label == 1 else "absent",
              "no_finding": "absent" if label == 1 else "present"}
    return build_record(states, modality="CXR", anatomy=["chest"], source="pneumoniamnist",
                        vocabulary=CXR_FINDINGS, record_id=record_id, input_path=path)


def compile_ham10000(dx: str, *, record_id: str | None = None, path: str | None = None,
                     localization: str | None = None) -> UMSRecord:
    """HAM10000 ``dx`` code (akiec, bcc, bkl, df, mel, nv, vasc) -> UMS (one present)."""
    if dx not in HAM10000_DX:
        raise DataError(path, f"dx {dx!r}", f"one of {list(HAM10000_DX)}", record=record_id)
    states = {key: ("present" if code == dx else "absent") for code, key in HAM10000_DX.items()}
    anatomy = ["skin"] + ([str(localization)] if not _is_blank(localization) else [])
    return build_record(states, modality="dermoscopy", anatomy=anatomy, source="ham10000",
                        vocabulary=HAM10000_FINDINGS, record_id=record_id, input_path=path)


class LabelMapping(StrictConfig):
    """A user's label table described for :func:`compile_with_mapping`.

    Example (YAML)::

        modality: CXR
        anatomy: [chest]
        id_column: study_id
        view_column: view            # optional
        columns: {Effusion: pleural_effusion, Cardiomegaly: cardiomegaly}
        values: {"1": present, "0": absent, "-1": uncertain, "u": uncertain}
    """

    modality: str
    anatomy: list[str] = Field(default_factory=list)
    id_column: str | None = None
    view_column: str | None = None
    columns: dict[str, str]
    values: dict[str, str | None] = Field(
        default_factory=lambda: {"1": "present", "0": "absent", "-1": "uncertain"})
    source: str = "mapping"


def load_mapping(path: str | Path) -> LabelMapping:
    """Read a YAML or JSON mapping file; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "mapping file not found", "a YAML or JSON LabelMapping")
    try:
        data = (json.loads(p.read_text()) if p.suffix.lower() == ".json"
                else yaml.safe_load(p.read_text()))
        mapping = LabelMapping.model_validate(data)
    except (json.JSONDecodeError, yaml.YAMLError, ValidationError) as e:
        raise DataError(p, f"invalid mapping ({e})", "keys modality, columns, values") from e
    bad = {k: v for k, v in mapping.values.items() if v not in ("present", "absent", "uncertain", None)}
    if bad:
        raise DataError(p, f"values map to unknown states {bad}", "present/absent/uncertain/null")
    return mapping


def _value_key(value: Any) -> str:
    # 1.0 and "1" must hit the same mapping entry: pandas reads integer columns with NaN as float.
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def compile_with_mapping(row: Mapping[str, Any], mapping: LabelMapping, *,
                         record_id: str | None = None, path: str | None = None) -> UMSRecord:
    """One row of a user table -> UMS via a :class:`LabelMapping`. Unmapped values are errors."""
    states: dict[str, str | None] = {}
    for col, key in mapping.columns.items():
        if col not in row:
            raise DataError(path, f"column {col!r} missing", f"columns {list(mapping.columns)}",
                            record=record_id)
        value = row[col]
        if _is_blank(value):
            states[key] = None
            continue
        vk = _value_key(value)
        if vk not in mapping.values:
            raise DataError(path, f"column {col!r} has value {value!r} not in the mapping",
                            f"one of {list(mapping.values)} or blank", record=record_id)
        states[key] = mapping.values[vk]
    view = row.get(mapping.view_column) if mapping.view_column else None
    return build_record(states, modality=mapping.modality, anatomy=mapping.anatomy,
                        source=mapping.source, vocabulary=list(mapping.columns.values()),
                        record_id=record_id, study_view=normalise_view(view), input_path=path)


def compile_table(table: pd.DataFrame | Iterable[Mapping[str, Any]],
                  compile_row: Callable[[Mapping[str, Any]], UMSRecord]) -> list[UMSRecord]:
    """Apply a row compiler (e.g. ``lambda r: compile_nih(r["Finding Labels"], ...)``)."""
    rows = table.to_dict("records") if isinstance(table, pd.DataFrame) else table
    return [compile_row(r) for r in rows]
