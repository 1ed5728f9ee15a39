import numpy as np
import pytest

from medvlp.errors import ConfigError
from medvlp.knowledge.compilers import compile_nih, compile_pneumoniamnist
from medvlp.knowledge.field_query import FOCUS_FINDINGS, field_query_prompt, sample_fields
from medvlp.knowledge.ums import build_record, render_target


def test_samples_k_answerable_fields_in_range():
    rec = build_record({"cardiomegaly": "present", "edema": "absent", "atelectasis": "uncertain",
                        "pneumonia": "absent", "fracture": None, "mass": "absent", "nodule": "absent",
                        "hernia": None, "emphysema": "absent"}, modality="CXR", source="t")
    rng = np.random.default_rng(0)
    sizes = set()
    for _ in range(200):
        fields = sample_fields(rec, rng, k_min=4, k_max=6)
        assert 4 <= len(fields) <= 6 and len(set(fields)) == len(fields)
        assert all(rec.answerability[f] for f in fields)   # never an unanswerable field
        sizes.add(len(fields))
    assert sizes == {4, 5, 6}


def test_focus_probability():
    rec = compile_nih("Mass")  # 15 answerable fields, focus labels cardiomegaly and pneumonia
    rng = np.random.default_rng(1)
    def rate(p):
        hits = sum(any(f in FOCUS_FINDINGS for f in sample_fields(rec, rng, k_min=4, k_max=4, focus_p=p))
                   for _ in range(2000))
        return hits / 2000
    # without forcing, 4 of 15 with 2 focus labels: 1 - C(13,4)/C(15,4) = 0.4857
    assert abs(rate(0.0) - 0.4857) < 0.04
    # forcing with p=0.6: 0.6 + 0.4 * (1 - C(13,3)... ) ~ 0.6 + 0.4*0.4857 ~ 0.79 (at least 0.6)
    assert rate(0.6) > 0.72 and rate(1.0) == 1.0


def test_few_answerable_and_prompt_lists_fields():
    rec = compile_pneumoniamnist(1)
    fields = sample_fields(rec, np.random.default_rng(0))
    assert fields == ["no_finding", "pneumonia"]
    prompt = field_query_prompt(fields)
    assert "no_finding, pneumonia" in prompt and "study_view" in prompt
    target = render_target(rec, fields)
    assert '"pneumonia": {"state": "present"}' in target and "cardiomegaly" not in target
    with pytest.raises(ConfigError):
        sample_fields(rec, np.random.default_rng(0), k_min=5, k_max=4)
