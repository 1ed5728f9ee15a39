import json
import os
from pathlib import Path

import pytest

from medvlp.knowledge.structure import cohen_kappa, read_ums_jsonl, run_structure
from medvlp.knowledge.teachers import FakeTeacher, PrivacyError


def iu_reports():
    root = Path(os.environ.get("MEDVLP_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    p = root / "iu_xray" / "indiana_reports.csv"
    if not p.is_file():
        pytest.skip("IU X-ray reports not available")
    return p


def small_csv(tmp_path):
    p = tmp_path / "r.csv"
    p.write_text("uid,findings,impression\n1,Heart size normal. No pneumothorax.,Normal chest\n"
                 "2,,\n3,There is a small right pleural effusion.,Effusion.\n")
    return p


def test_resume_empty_report_and_agreement(tmp_path):
    inp, out = small_csv(tmp_path), tmp_path / "o.jsonl"
    s = run_structure(inp, out, progress=False, limit=1)
    assert s["written"] == 1
    with out.open("a") as fh:  # a run killed mid-line
        fh.write('{"schema_version": "ums-0')
    s = run_structure(inp, out, progress=False, second_teacher=FakeTeacher())
    assert s["skipped_existing"] == 1 and s["written"] == 2 and s["records"] == 3
    recs = {r.provenance.record_id: r for r in read_ums_jsonl(out)}
    assert recs["2"].verifier.reason == "empty report" and s["empty_reports"] == 1
    assert recs["3"].states["pleural_effusion"] == "present"
    assert s["agreement"]["pleural_effusion"] == 1.0  # the fake mirrors the labeler
    meta = json.loads(out.with_name("o.jsonl.meta.json").read_text())
    assert meta["allow_remote"] is False


def test_remote_teacher_refused(tmp_path):
    with pytest.raises(PrivacyError, match="allow_remote"):
        run_structure(small_csv(tmp_path), tmp_path / "o.jsonl", teacher="openai:https://example.org/v1#m",
                      progress=False)


def test_missing_column_names_file(tmp_path):
    with pytest.raises(Exception, match="r.csv.*report"):
        run_structure(small_csv(tmp_path), tmp_path / "o.jsonl", text_columns=("report",), progress=False)


def test_kappa_reference():
    a = ["present", "absent", "absent", None, "present", "absent"]
    b = ["present", "absent", "present", None, "absent", "absent"]
    # p_o = 4/6; p_e = (2/6)(2/6) + (3/6)(3/6) + (1/6)(1/6) = 14/36
    assert cohen_kappa(a, b) == pytest.approx((4 / 6 - 14 / 36) / (1 - 14 / 36))
    from sklearn.metrics import cohen_kappa_score
    enc = lambda xs: [str(x) for x in xs]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(enc(a), enc(b)))


@pytest.mark.slow
def test_all_iu_reports_offline_and_cached_rerun(tmp_path):
    inp, out = iu_reports(), tmp_path / "iu.jsonl"
    cold = run_structure(inp, out, progress=False)
    assert cold["records"] == 3851 and cold["failures"] == 0 and cold["seconds"] < 60
    warm = run_structure(inp, out, progress=False, overwrite=True)
    assert warm["cache_hits"] == 3851 and warm["records"] == 3851
    assert warm["seconds"] < cold["seconds"]
    lines = out.read_text().splitlines()
    rec = json.loads(lines[0])
    assert rec["provenance"]["spans"] and rec["provenance"]["cached"] is True
