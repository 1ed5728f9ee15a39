"""M-FLAG mechanics: frozen text side, image-side gradients, loss = reference, text sources, saving."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from medvlp.data.imageset import ImageSet
from medvlp.data.transforms import Preprocess
from medvlp.errors import ConfigError, DataError
from medvlp.losses.alignment import cosine_alignment
from medvlp.losses.feature_decorrelation import MFLAG_CODE, feature_decorrelation
from medvlp.methods.mflag import MFlagDataset, MFlagMethod, MFlagOptions, build, report_texts
from medvlp.methods.registry import BuildContext
from medvlp.models import create_model
from medvlp.models.text import TextEncoder, minilm_folder


@pytest.fixture(scope="module")
def tiny_text_folder(tmp_path_factory):
    """A tiny random BERT with the MiniLM tokenizer, saved as an HF folder (any encoder config)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    folder = tmp_path_factory.mktemp("tiny_bert")
    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def _text(folder) -> TextEncoder:
    from medvlp.models.text import load_text_encoder

    return load_text_encoder(folder, pooling="cls")


def _nih(n=24, seed=0, **meta) -> ImageSet:
    rng = np.random.default_rng(seed)
    names = ["Atelectasis", "Cardiomegaly", "Effusion"]
    labels = (rng.random((n, 3)) < 0.3).astype(np.float32)
    return ImageSet(name="nih1000", images=rng.integers(0, 255, (n, 28, 28), dtype=np.uint8), labels=labels,
                    task="multilabel", label_names=names, split=np.array(["train"] * n), modality="xray",
                    meta=dict(meta))


def _method(folder, **opts) -> MFlagMethod:
    torch.manual_seed(0)
    return MFlagMethod(create_model("resnet18_28"), _text(folder),
                       MFlagOptions(text_encoder=folder, hidden_dim=32, embed_dim=16, rank_check="off", **opts))


def _batch(n=8):
    torch.manual_seed(1)
    texts = [f"Cardiomegaly is seen. No effusion {i}." if i % 2 else "Normal study." for i in range(n)]
    return {"image": torch.randn(n, 1, 28, 28), "text": texts}


def test_text_frozen_and_bit_identical_after_training_image_side_learns(tiny_text_folder, tmp_path):
    from medvlp.train.engine import TrainConfig, fit

    ds = _nih()
    built = build(BuildContext(backbone=create_model("resnet18_28"), train_set=ds,
                               transform=Preprocess(28, 1, [0.5], [0.5]),
                               options={"text_encoder": tiny_text_folder, "hidden_dim": 32, "embed_dim": 16,
                                        "rank_check": "off"}))
    m = built.method
    text_before = {k: v.clone() for k, v in m.text_encoder.state_dict().items()}
    img_before = {k: v.clone() for k, v in m.backbone.state_dict().items()}
    assert not any(p.requires_grad for p in m.text_encoder.parameters())
    fit(m, built.dataset, TrainConfig(max_steps=3, batch_size=8, lr=1e-2, progress=False), tmp_path / "run",
        collate_fn=built.collate_fn)
    m.train()
    assert not m.text_encoder.training and not m.text_encoder.model.training
    assert all(torch.equal(text_before[k], v) for k, v in m.text_encoder.state_dict().items())
    assert any(not torch.equal(img_before[k], v) for k, v in m.backbone.state_dict().items())
    assert "label" in built.parts_used["text"] and built.metadata["text_label_derived"] is True


def test_gradients_reach_image_side_despite_no_grad_text_path(tiny_text_folder):
    m = _method(tiny_text_folder)
    m.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = m(_batch())
    out["loss"].backward()
    for name, p in [("backbone", m.backbone.model.conv1.weight),
                    ("image projector", m.image_projector.net[0].weight),
                    ("text projector", m.text_projector.net[0].weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in m.text_encoder.parameters())


def test_loss_equals_reference_terms(tiny_text_folder):
    for opts in ({}, {"alignment_doubled": True, "batch_size_cfg": 512}, {"orth_variant": "paper"},
                 {"orth_on": "projection", "orth_weight": 0.5}):
        m = _method(tiny_text_folder, **opts)
        m.eval()  # fixed BN statistics so the reference sees the same projections
        b = _batch()
        out = m(b)
        feats = m.backbone.pooled(b["image"])
        z_v = m.image_out_norm(m.image_projector(feats))
        with torch.no_grad():
            e_t = m.text_encoder(b["text"])
        z_t = m.text_out_norm(m.text_projector(e_t))
        align = cosine_alignment(z_v, z_t, doubled=m.opts.alignment_doubled)
        x = feats if m.opts.orth_on == "backbone" else z_v
        orth = feature_decorrelation(x, divisor=m.opts.batch_size_cfg, **m.orth_kwargs)
        assert out["loss"].item() == pytest.approx((align + m.opts.orth_weight * orth).item(), rel=1e-5), opts
    assert _method(tiny_text_folder).orth_kwargs["off_diag_weight"] == MFLAG_CODE["off_diag_weight"]


def test_text_cache_is_exact(tiny_text_folder):
    m = _method(tiny_text_folder)
    texts = ["Possible edema.", "No pneumothorax.", "Possible edema."]
    cached = m.encode_text(texts)
    assert len(m._cache) == 2
    m.opts.text_cache_size = 0
    assert torch.allclose(cached, m.encode_text(texts), atol=1e-6)


def test_label_text_redrawn_every_access_and_reproducible():
    from medvlp.methods.vivid_targets import records_for_imageset

    ds = _nih()
    data = MFlagDataset(ds, Preprocess(28, 1, [0.5], [0.5]), records=records_for_imageset(ds))
    torch.manual_seed(0)
    a = [data[3]["text"] for _ in range(10)]
    torch.manual_seed(0)
    assert [data[3]["text"] for _ in range(10)] == a
    assert len(set(a)) > 5
    assert data[3]["image"].shape == (1, 28, 28)


def test_real_reports_from_meta_and_from_a_csv_manifest(tmp_path):
    ds = _nih(4, report=np.array(["r0", "r1", "r2", "r3"], dtype=object))
    assert report_texts(ds.subset(np.array([2, 0])), "report") == ["r2", "r0"]
    assert report_texts(ds, "findings") is None
    bad = _nih(2, report=np.array(["ok", "  "], dtype=object))
    with pytest.raises(DataError, match="empty report"):
        report_texts(bad, "report")

    from PIL import Image

    rows = ["path,label,report"]
    for i in range(6):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / f"im{i}.png")
        rows.append(f"im{i}.png,{i % 2},report number {i}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    man = _load_manifest(tmp_path / "m.csv")
    train = man.split_view("train")
    texts = report_texts(train, "report")
    paths = man.meta["paths"][train.meta["parent_indices"]]
    assert texts == [f"report number {int(p[2])}" for p in paths]


def _load_manifest(path):
    from medvlp.data.manifest import load_manifest

    return load_manifest(path, image_col="path", label_cols="label")


def test_options_and_rank_check(tiny_text_folder):
    with pytest.raises(ConfigError, match="method.options for mflag"):
        build(BuildContext(backbone=create_model("resnet18_28"), train_set=_nih(), transform=None,
                           options={"no_such_option": 1}))
    m = MFlagMethod(create_model("resnet18_28"), _text(tiny_text_folder),
                    MFlagOptions(hidden_dim=32, embed_dim=16))
    m.train()
    with pytest.warns(UserWarning, match="rank <= 8 < 512"):
        m(_batch())
    strict = MFlagMethod(create_model("resnet18_28"), _text(tiny_text_folder),
                         MFlagOptions(hidden_dim=32, embed_dim=16, rank_check="error")).train()
    with pytest.raises(ConfigError, match="positive floor"):
        strict(_batch())
    with pytest.raises(DataError, match="no report column"):
        build(BuildContext(backbone=create_model("resnet18_28"), train_set=_nih(), transform=None,
                           options={"text_source": "reports", "text_encoder": tiny_text_folder}))


def test_extra_state_round_trip(tiny_text_folder):
    m = _method(tiny_text_folder)
    m.train()
    m(_batch())
    state = m.extra_state()
    assert {"image_out_norm.running_mean", "text_out_norm.running_var"} <= set(state)
    fresh = _method(tiny_text_folder)
    fresh.load_extra_state(state)
    assert torch.equal(fresh.image_out_norm.running_mean, m.image_out_norm.running_mean)


def test_saved_dual_encoder_reproduces_the_trained_projections(tiny_text_folder, tmp_path):
    from medvlp.models import save_pretrained
    from medvlp.models.dual_encoder import load_medvlp_dual_encoder

    m = _method(tiny_text_folder)
    m.train()
    for _ in range(3):
        m(_batch())  # move the output BN statistics away from their init
    m.eval()
    save_pretrained(m.backbone, tmp_path, metadata={"method": "mflag"})
    m.save_dual_encoder(tmp_path)
    dual = load_medvlp_dual_encoder(tmp_path, text_encoder=m.text_encoder)
    b = _batch()
    with torch.no_grad():
        want = torch.nn.functional.normalize(m.project_image(m.backbone.pooled(b["image"])), dim=-1)
        assert torch.allclose(dual.encode_image(b["image"]), want, atol=1e-4)
        want_t = m.project_text(m.text_encoder(["Normal study."]))
        got_t = dual.text.projector(m.text_encoder(["Normal study."])) if dual.text.projector is not None else None
    assert got_t is not None and torch.allclose(got_t, want_t, atol=1e-4)


@pytest.mark.slow
def test_pretrain_with_only_the_method_name(tmp_path):
    """``medvlp pretrain --method mflag`` defaults: offline MiniLM, label text, interface-C files."""
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    cfg = PretrainConfig(method=MethodConfig(name="mflag"), model=ModelConfig(name="resnet18_28"),
                         train=TrainConfig(max_steps=2, batch_size=16, progress=False), out_dir=str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model_dir, res = run_pretrain(cfg)
    assert res.steps == 2 and np.isfinite(res.final["loss"])
    assert (model_dir / "dual_encoder.json").is_file() and (model_dir / "dual_encoder.safetensors").is_file()
    import json

    meta = json.loads((model_dir / "metadata.json").read_text())
    assert "no real reports" in meta["parts_used"]["text"]
    assert "MiniLM" in meta["parts_used"]["text_encoder"]


@pytest.mark.slow
def test_resume_is_exact_including_output_norm_statistics(tiny_text_folder, tmp_path):
    """Label text redrawn per access + affine-free BN statistics: both must survive a resume."""
    from medvlp.methods.base import trainable_state_dict
    from medvlp.train.engine import TrainConfig, fit

    ds = _nih(32)
    cfg = TrainConfig(max_steps=4, batch_size=8, lr=1e-2, ckpt_every=2, log_every=1, progress=False)

    def fresh():
        torch.manual_seed(0)
        return build(BuildContext(backbone=create_model("resnet18_28"), train_set=ds,
                                  transform=Preprocess(28, 1, [0.5], [0.5]),
                                  options={"text_encoder": tiny_text_folder, "hidden_dim": 32, "embed_dim": 16,
                                           "rank_check": "off"}))

    ref = fresh()
    ref_res = fit(ref.method, ref.dataset, cfg, tmp_path / "ref")

    class Crash(Exception):
        pass

    def crash_at_3(record):
        if record["step"] == 3:
            raise Crash

    with pytest.raises(Crash):
        run = fresh()
        fit(run.method, run.dataset, cfg, tmp_path / "run", on_log=crash_at_3)
    resumed = fresh()
    res = fit(resumed.method, resumed.dataset, cfg, tmp_path / "run", resume=True)
    assert res.final["loss"] == ref_res.final["loss"]
    for k, v in trainable_state_dict(ref.method).items():
        assert torch.equal(v, trainable_state_dict(resumed.method)[k]), k
    for k, v in ref.method.extra_state().items():
        assert torch.equal(v, resumed.method.extra_state()[k]), k


def test_bench_markdown_says_label_derived_and_compares_with_random_init():
    import json
    from pathlib import Path

    from medvlp.bench.mflag import SUITES, markdown

    assert {"mflag_quick", "mflag"} <= set(SUITES)
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "mflag_quick.json"
    if not path.is_file():
        pytest.skip("no committed mflag_quick results")
    result = json.loads(path.read_text())
    text = "\n".join(markdown(result))
    assert "no real reports" in text and "2-core" in text
    mflag_rows = [r for r in result["quality"]["rows"] if r.get("init") == "medvlp mflag"]
    assert mflag_rows and all("no real reports" in r["method"] for r in mflag_rows)
    # every scored M-FLAG row appears in the comparison table with its own AUC
    for r in mflag_rows:
        assert f"{r['summary']['macro_auc']['mean']:.3f}" in text.split("against random init")[1]
