import json

import numpy as np
import pytest

from medvlp.errors import DataError
from medvlp.knowledge.symptoms import (check_symptoms, generate_symptoms, intersect, list_symptom_sets,
                                       load_symptoms, make_grid, run_symptoms, similarity_support,
                                       vqa_support)
from medvlp.knowledge.teachers import FakeTeacher


def test_curated_sets_are_valid_and_complete():
    assert set(list_symptom_sets()) >= {"pneumoniamnist", "melanoma_nevus", "ham10000", "breast_ultrasound"}
    ham = load_symptoms("ham10000")
    assert len(ham.classes) == 7 and all(len(v) == 4 for v in ham.classes.values())
    assert set(load_symptoms("pneumoniamnist").classes) == {"normal", "pneumonia"}


def test_class_name_is_refused():
    with pytest.raises(DataError, match="names the category 'melanoma'"):
        check_symptoms(["dark melanoma spot"], ["melanoma", "nevus"])


def test_stage1_retries_until_valid():
    t = FakeTeacher(['{"symptoms": ["white pneumonia patch"]}', '{"symptoms": ["white cloudy patch"]}',
                     '{"symptoms": ["dark clear lungs"]}'])
    out = generate_symptoms(t, ["pneumonia", "normal"], "chest X-ray", k=4)
    assert out == {"pneumonia": ["white cloudy patch"], "normal": ["dark clear lungs"]}
    assert "names the category" in t.prompts[1] and "simple words" in t.prompts[0]


def test_dual_encoder_filter_and_intersection(tmp_path):
    # images are scalars; symptom "bright" tracks the value, "noise" does not separate classes
    images = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.3])
    labels = ["a", "a", "a", "b", "b", "b"]
    symptoms = {"a": ["bright", "noise"], "b": ["dim"]}

    def score(imgs, texts):
        cols = {"bright": imgs, "noise": np.array([0.5, 0.1, 0.5, 0.5, 0.9, 0.1]), "dim": -imgs}
        return np.stack([cols[t] for t in texts], axis=1)

    sup = similarity_support(symptoms, images, labels, score)
    assert sup["a"] == {"bright": 1.0, "noise": 0.0} and sup["b"] == {"dim": 1.0}
    assert intersect(symptoms, sup, 0.5) == {"a": ["bright"], "b": ["dim"]}
    data = run_symptoms(tmp_path / "s.json", "pneumoniamnist", images=np.arange(4.0),
                        labels=["normal", "normal", "pneumonia", "pneumonia"],
                        score=lambda im, tx: np.stack([im * (-1 if i < 4 else 1) for i in range(len(tx))], 1))
    assert json.loads((tmp_path / "s.json").read_text()) == data
    assert data["classes"] == load_symptoms("pneumoniamnist").classes  # every symptom separates here
    assert data["source"] == "curated+dual-encoder" and data["support"]["pneumonia"]
    with pytest.raises(DataError, match="no symptom of class 'a'"):
        intersect(symptoms, {"a": {"bright": 0.1}, "b": {"dim": 1.0}}, 0.5)


def test_vqa_support_on_grids():
    grid = make_grid(np.ones((3, 4, 4)), 2, 2)
    assert grid.shape == (8, 8) and grid[4:, 4:].sum() == 0
    sup = vqa_support({"a": ["spots", "lines"]}, {"a": [grid, grid]},
                      lambda g, q: "Yes." if "spots" in q else "no")
    assert sup == {"a": {"spots": 1.0, "lines": 0.0}}
