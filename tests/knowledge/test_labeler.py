import pytest

from medvlp.knowledge.labeler import label_report
from medvlp.knowledge.labeler.sections import split_sections, split_sentences


def states(findings=None, impression=None, **kw):
    return label_report(findings, impression, **kw).states


def test_normal_report():
    s = states("Heart size normal. Lungs are clear. XXXX are normal. No pneumonia, effusions, edema, "
               "pneumothorax, adenopathy, nodules or masses.", "Normal chest")
    assert s["cardiomegaly"] == "absent"
    for f in ("consolidation", "lung_opacity", "pneumonia", "pleural_effusion", "edema",
              "pneumothorax", "nodule", "mass"):
        assert s[f] == "absent", f
    assert s["no_finding"] == "present"
    assert s["fracture"] is None and s["support_devices"] is None


@pytest.mark.parametrize("text, finding, state", [
    ("No pneumothorax or pleural effusion.", "pleural_effusion", "absent"),
    ("No focal consolidation, pneumothorax or large pleural effusion.", "pneumothorax", "absent"),
    ("Right base calcified granuloma.", "granuloma", "present"),
    ("Right base calcified granuloma.", "calcification", "present"),
    ("Mild degenerative changes of the thoracic spine.", "degenerative_changes", "present"),
    ("Streaky opacity in the left base which may represent atelectasis.", "lung_opacity", "present"),
    ("Streaky opacity in the left base which may represent atelectasis.", "atelectasis", "uncertain"),
    ("The heart is not enlarged.", "cardiomegaly", "absent"),
    ("Heart size is mildly enlarged but stable.", "cardiomegaly", "present"),
    ("Borderline cardiomegaly.", "cardiomegaly", "uncertain"),
    ("Pneumonia cannot be excluded.", "pneumonia", "uncertain"),
    ("XXXX opacity in the right lower lobe.", "lung_opacity", "present"),
    ("Left-sided PICC with tip at the cavoatrial junction.", "support_devices", "present"),
    ("Mild dextroscoliosis of the thoracic spine.", "scoliosis", "present"),
    ("Hyperinflated lungs.", "hyperinflation", "present"),
    ("The lungs are normally inflated.", "hyperinflation", "absent"),
    ("No acute bony abnormality.", "fracture", "absent"),
    ("Cardiomegaly without pleural effusion.", "cardiomegaly", "present"),
    ("Cardiomegaly without pleural effusion.", "pleural_effusion", "absent"),
    ("No pericardial effusion.", "pleural_effusion", None),
    ("The cardiomediastinal silhouette is within normal limits.", "enlarged_cardiomediastinum", "absent"),
])
def test_sentences(text, finding, state):
    assert states(text)[finding] == state


def test_provenance_spans_point_into_sections():
    rec = label_report("The lungs are clear. There is a small left pleural effusion.",
                       "Small left effusion.", record_id="7")
    assert rec.findings["pleural_effusion"].state == "present"
    spans = rec.provenance.spans["pleural_effusion"]
    sections = rec.extensions["sections"]
    for sp in spans:
        assert sections[sp.section][sp.start:sp.end] == sp.text
    assert {sp.section for sp in spans} == {"findings", "impression"}
    assert rec.laterality == "left"
    assert rec.findings["no_finding"].state == "absent"


def test_empty_report_is_unanswerable_not_dropped():
    rec = label_report(float("nan"), "  ", record_id="9")
    assert all(v is None for v in rec.states.values())
    assert not any(rec.answerability.values())
    assert rec.verifier.reason == "empty report" and rec.verifier.passed is False


def test_sections_and_sentences():
    parts = split_sections("INDICATION: rule out pneumonia\nFINDINGS: Heart normal.\nIMPRESSION: 1. No acute disease.")
    assert parts == {"findings": "Heart normal.", "impression": "1. No acute disease."}
    sents = split_sentences("Nodule measures 2.5 cm. Stable.. 2. Clear lungs.", "findings")
    assert [s.text for s in sents] == ["Nodule measures 2.5 cm.", "Stable..", "Clear lungs."]
    # the indication "rule out pneumonia" must not become a finding
    assert label_report(text="INDICATION: rule out pneumonia\nFINDINGS: Heart normal.").states["pneumonia"] is None
