import json

import numpy as np
import pytest
import torch

from medvlp.data.transforms import Preprocess
from medvlp.eval.anchors import anchor_rows
from medvlp.eval.features import extract_features, features_for_splits
from medvlp.eval.protocol import evaluate_backbone, split_hash
from medvlp.eval.report import TableSection, TextSection, write_html_report
from medvlp.models import Backbone, create_model


@pytest.fixture(scope="module")
def tiny_vit() -> Backbone:
    torch.manual_seed(0)
    return create_model("vit_tiny_p4_28", depth=2)


def _small(ds, n_per_split=(200, 50, 50), seed=0):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.flatnonzero(ds.split == s), n, replace=False)
                          for s, n in zip(("train", "val", "test"), n_per_split)])
    return ds.subset(np.sort(idx))


def test_extract_features_matches_direct_forward(tiny_vit, pneumonia):
    ds = _small(pneumonia, (20, 5, 5))
    tiny_vit.train()
    feats = extract_features(tiny_vit, ds, batch_size=7, device="cpu")
    assert tiny_vit.training  # mode restored
    pre = Preprocess.from_dict(tiny_vit.preprocess)
    tiny_vit.eval()
    with torch.no_grad():
        direct = tiny_vit.pooled(torch.stack([pre(img) for img in ds.images])).numpy()
    assert feats.shape == (30, tiny_vit.feature_dim)
    np.testing.assert_allclose(feats, direct, rtol=1e-4, atol=1e-5)
    splits = features_for_splits(tiny_vit, ds, device="cpu")
    assert {k: len(v[0]) for k, v in splits.items()} == {"train": 20, "val": 5, "test": 5}
    np.testing.assert_array_equal(splits["test"][1], ds.labels[ds.split == "test"])


def test_evaluate_backbone_json_and_html_report(tiny_vit, pneumonia, tmp_path):
    ds = _small(pneumonia)
    report = evaluate_backbone(tiny_vit, [ds], protocols=("logreg", "knn"), seeds=(0, 1),
                               n_boot=50, device="cpu",
                               protocol_kwargs={"logreg": {"Cs": [0.1]}})
    out = report.save_json(tmp_path / "eval.json")
    data = json.loads(out.read_text())
    assert {"datasets", "seeds", "config_hash", "machine", "medvlp_version"} <= set(data)
    assert data["seeds"] == [0, 1]
    d = data["datasets"]["pneumoniamnist"]
    assert d["task"] == "binary" and d["n"] == {"train": 200, "val": 50, "test": 50}
    assert d["split_hash"] == split_hash(ds)
    for proto in ("logreg", "knn"):
        p = d["protocols"][proto]
        assert [r["seed"] for r in p["per_seed"]] == [0, 1]
        assert p["summary"]["macro_auc"]["n"] == 2
        ci = p["ci95"]["0"]
        auc = p["per_seed"][0]["metrics"]["macro_auc"]
        assert ci["lo"] <= auc <= ci["hi"] and ci["n_boot"] == 50
    assert d["protocols"]["logreg"]["per_seed"][0]["chosen"]["C"] == 0.1
    assert "test_scores" not in json.dumps(data)
    # Another protocol setting gives another config hash; the same one, the same hash.
    other = evaluate_backbone(tiny_vit, [ds], protocols=("logreg",), seeds=(0,), n_boot=10,
                              device="cpu")
    assert other.config_hash != report.config_hash
    assert other.to_json()["datasets"]["pneumoniamnist"]["split_hash"] == d["split_hash"]

    sections = report.report_sections()
    sections += [TableSection("Anchors <PneumoniaMNIST>", anchor_rows("pneumoniamnist")),
                 TextSection("Notes", "a <b>bold</b> claim & more")]
    html_path = write_html_report(tmp_path / "r.html", title="<script>alert(1)</script>",
                                  sections=sections)
    text = html_path.read_text()
    assert text.count('<img src="data:image/png;base64,') == 2  # ROC + embedding
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "&lt;b&gt;bold&lt;/b&gt; claim &amp; more" in text
    assert "Google AutoML Vision" in text


def test_report_multilabel_sections(tiny_vit, nih):
    ds = _small(nih, (150, 50, 60))
    ds.images = ds.images[:, ::2, ::2]  # 32 px; preprocessing resizes to 28 anyway
    report = evaluate_backbone(tiny_vit, [ds], protocols=("knn",), n_boot=20, device="cpu")
    per_class = report.to_json()["datasets"]["nih1000"]["protocols"]["knn"]["per_seed"][0][
        "metrics"]["per_class_auc"]
    assert set(per_class) == set(nih.label_names)
    roc = [s for s in report.report_sections() if "ROC" in s.title][0]
    assert len(roc.curves) == 14


def test_anchor_rows():
    rows = anchor_rows("PneumoniaMNIST")
    floor = [r for r in rows if r["model"] == "logistic regression on raw pixels"]
    assert floor[0]["auc"] == 0.927 and floor[0]["acc"] == 0.849
    assert {r["model"] for r in anchor_rows("breastmnist")} >= {"ResNet-18 (28)",
                                                                "ResNet-50 (224)"}
    assert anchor_rows("unknown_set") == []
    assert all(set(r) == {"source", "model", "auc", "acc", "note"} for r in rows)


def test_evaluate_backbone_names_dataset_without_val(tiny_vit, pneumonia):
    from medvlp.errors import DataError

    ds = _small(pneumonia, (30, 10, 10))
    ds = ds.subset(ds.split != "val")
    ds.source = "/data/pneumo.npz"
    with pytest.raises(DataError, match=r"/data/pneumo.npz: .*\['val'\]"):
        evaluate_backbone(tiny_vit, [ds], n_boot=5, device="cpu")
