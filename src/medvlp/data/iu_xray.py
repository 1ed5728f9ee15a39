"""IU X-ray (Open-i) radiology reports, with the R2Gen train/val/test split where available.

Only the text is here (no images). Reports with neither findings nor impression are kept and
flagged (``empty_report``), never dropped.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from medvlp.data.io import read_csv_columns
from medvlp.data.root import find_file
from medvlp.errors import DataError

IU_LICENSE = "public via NLM Open-i, no license stated: research / non-commercial use"
IU_CITATION = ["Demner-Fushman D. et al., Preparing a collection of radiology examinations for "
               "distribution and retrieval, JAMIA 23(2):304-310 (2016)",
               "Chen Z. et al., Generating Radiology Reports via Memory-driven Transformer, "
               "EMNLP 2020 (R2Gen split)"]
_TEXT_COLUMNS = ["findings", "impression", "indication", "comparison"]


def load_iu_reports(root: str | Path | None = None) -> pd.DataFrame:
    """One row per study: uid, image (study description), indication, comparison, findings,
    impression (missing text -> ""), r2gen_split ("train"/"val"/"test" or "" when the study is
    not in R2Gen's split), n_frontal, n_lateral, empty_report."""
    reports_path = find_file("iu_xray/indiana_reports.csv", root)
    split_path = find_file("iu_xray/r2gen_annotation.csv", root)
    proj_path = find_file("iu_xray/indiana_projections.csv", root)
    reports = read_csv_columns(reports_path, ["uid", "image"] + _TEXT_COLUMNS)
    splits = read_csv_columns(split_path, ["uid", "split"])
    proj = read_csv_columns(proj_path, ["uid", "projection"])
    if reports["uid"].duplicated().any():
        raise DataError(reports_path, "duplicate uid values", "one row per study")
    dup = splits["uid"].duplicated()
    if dup.any():
        raise DataError(split_path, f"uid {splits['uid'][dup].iloc[0]} appears twice",
                        "one split per study")
    out = reports[["uid", "image"] + _TEXT_COLUMNS].copy()
    for c in _TEXT_COLUMNS + ["image"]:
        out[c] = out[c].fillna("").astype(str).str.strip()
    out = out.merge(splits[["uid", "split"]].rename(columns={"split": "r2gen_split"}),
                    on="uid", how="left", validate="one_to_one")
    out["r2gen_split"] = out["r2gen_split"].fillna("").astype(str)
    counts = pd.crosstab(proj["uid"], proj["projection"])
    for view in ("Frontal", "Lateral"):
        col = counts[view] if view in counts else pd.Series(dtype=int)
        out[f"n_{view.lower()}"] = out["uid"].map(col).fillna(0).astype(int)
    out["empty_report"] = (out["findings"] == "") & (out["impression"] == "")
    out.attrs.update({"license": IU_LICENSE, "citation": IU_CITATION,
                      "files": [str(reports_path), str(split_path), str(proj_path)]})
    return out


def report_text(row: Mapping[str, Any]) -> str:
    """Findings and impression joined by a space ("" when both are empty)."""
    parts = [str(row.get(k, "") or "").strip() for k in ("findings", "impression")]
    return " ".join(p for p in parts if p and p.lower() != "nan")
