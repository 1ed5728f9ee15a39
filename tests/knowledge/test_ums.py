import json

import pytest
from hypothesis import given, settings, strategies as st

from medvlp.errors import DataError
from medvlp.knowledge.compilers import (CHEXPERT_COLUMNS, NIH_LABELS, compile_chexpert,
                                        compile_ham10000, compile_nih, compile_pneumoniamnist,
                                        compile_with_mapping, load_mapping)
from medvlp.knowledge.ums import (CXR_FINDINGS, HAM10000_FINDINGS, VerificationError, build_record,
                                  canonical_json, parse_record, render_target, verify)


def roundtrip(rec, vocab):
    text = canonical_json(rec)
    back = parse_record(text, vocabulary=vocab)
    assert canonical_json(back) == text
    return back


@settings(max_examples=60, deadline=None)
@given(st.lists(st.sampled_from([1, 0, -1, None, 1.0, -1.0, "", float("nan")]),
                min_size=14, max_size=14), st.sampled_from(["AP", "PA", "LL", None]))
def test_chexpert_roundtrip(values, view):
    row = dict(zip(CHEXPERT_COLUMNS, values), **{"AP/PA": view})
    rec = roundtrip(compile_chexpert(row, record_id="r1"), tuple(CHEXPERT_COLUMNS.values()))
    expected = {1: "present", 0: "absent", -1: "uncertain"}
    for col, v in zip(CHEXPERT_COLUMNS, values):
        key = CHEXPERT_COLUMNS[col]
        blank = v is None or v == "" or v != v
        assert rec.findings[key].state == (None if blank else expected[int(v)])
        assert rec.answerability[key] is (not blank)
        assert rec.uncertainty[key] == (None if blank else v == -1)
    assert rec.study_view == {"AP": "AP", "PA": "PA", "LL": "LAT", None: None}[view]


@settings(max_examples=40, deadline=None)
@given(st.sets(st.sampled_from([k for k in NIH_LABELS if k != "No Finding"]), max_size=4))
def test_nih_roundtrip(labels):
    text = "|".join(sorted(labels)) or "No Finding"
    rec = roundtrip(compile_nih(text, record_id="x.png", view="PA"), tuple(NIH_LABELS.values()))
    present = {k for k, v in rec.states.items() if v == "present"}
    assert present == ({NIH_LABELS[s] for s in labels} or {"no_finding"})
    assert all(rec.answerability.values())


def test_nih_rejects_unknown_label():
    with pytest.raises(DataError, match="Pneumonitis"):
        compile_nih("Pneumonitis|Mass", path="table.csv")


@pytest.mark.parametrize("label", [0, 1])
def test_pneumoniamnist(label):
    rec = roundtrip(compile_pneumoniamnist(label), CXR_FINDINGS)
    assert rec.findings["pneumonia"].state == ("present" if label else "absent")
    assert rec.findings["cardiomegaly"].state is None and rec.answerability["cardiomegaly"] is False
    assert len(rec.findings) == len(CXR_FINDINGS)  # unknown slots kept as null


@pytest.mark.parametrize("dx", ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
def test_ham10000(dx):
    rec = roundtrip(compile_ham10000(dx, localization="back"), HAM10000_FINDINGS)
    assert sum(s == "present" for s in rec.states.values()) == 1
    assert rec.modality == "dermoscopy" and rec.anatomy == ["skin", "back"]


def test_mapping_file(tmp_path):
    p = tmp_path / "map.yaml"
    p.write_text("modality: CXR\nanatomy: [chest]\ncolumns: {eff: pleural_effusion, cm: cardiomegaly}\n"
                 "values: {'1': present, '0': absent, u: uncertain}\n")
    m = load_mapping(p)
    rec = roundtrip(compile_with_mapping({"eff": 1.0, "cm": "u"}, m), ("pleural_effusion", "cardiomegaly"))
    assert rec.states == {"pleural_effusion": "present", "cardiomegaly": "uncertain"}
    with pytest.raises(DataError, match="'cm' has value 7"):
        compile_with_mapping({"eff": 1, "cm": 7}, m, path="t.csv")
    bad = tmp_path / "bad.yaml"
    bad.write_text("modality: CXR\ncolumns: {a: b}\nvalues: {'1': yes}\n")
    with pytest.raises(DataError, match="bad.yaml"):
        load_mapping(bad)


def test_verifier_catches_inconsistency():
    rec = compile_chexpert({"Edema": 1, "Cardiomegaly": None})
    data = json.loads(canonical_json(rec))
    data["answerability"]["cardiomegaly"] = True
    with pytest.raises(VerificationError, match="cardiomegaly"):
        verify(data)
    data = json.loads(canonical_json(rec))
    data["findings"]["edema"]["state"] = "maybe"
    with pytest.raises(VerificationError, match="findings.edema.state"):
        verify(data)
    data = json.loads(canonical_json(rec))
    del data["uncertainty"]["edema"]
    with pytest.raises(VerificationError, match="uncertainty keys"):
        verify(data)
    with pytest.raises(VerificationError, match="missing"):
        verify(json.loads(canonical_json(rec)), vocabulary=("edema", "hernia"))


def test_canonical_order_and_target():
    rec = build_record({"pneumothorax": "absent", "cardiomegaly": "present"}, modality="CXR",
                       source="t", vocabulary=("pneumothorax", "cardiomegaly", "edema"))
    d = json.loads(canonical_json(rec))
    assert list(d)[:4] == ["schema_version", "modality", "anatomy", "findings"]
    assert list(d["findings"]) == ["cardiomegaly", "edema", "pneumothorax"]
    assert render_target(rec) == ('{"modality": "CXR", "findings": {"cardiomegaly": {"state": "present"}, '
                                  '"edema": {"state": null}, "pneumothorax": {"state": "absent"}}, '
                                  '"study_view": null}')
    assert render_target(rec, ["pneumothorax"]).count("state") == 1
