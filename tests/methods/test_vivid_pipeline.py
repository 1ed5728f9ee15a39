"""End to end: ``--method vivid`` through run_pretrain, saved folder, plain timm, ONNX, diagnostics."""
from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
def test_pretrain_save_timm_onnx_and_diagnostics(tmp_path):
    from safetensors.torch import load_file

    from medvlp.export import export_onnx
    from medvlp.models import from_pretrained, load_timm
    from medvlp.train.engine import TrainConfig
    from medvlp.train.pretrain import DataConfig, MethodConfig, ModelConfig, PretrainConfig, run_pretrain

    cfg = PretrainConfig(data=DataConfig(dataset="nih1000"), model=ModelConfig(name="vit_tiny_p4_28"),
                         method=MethodConfig(name="vivid", options={"teacher": "tiny", "k_min": 2, "k_max": 3,
                                                                    "max_text_length": 2048}),
                         train=TrainConfig(max_steps=2, batch_size=4, lr=1e-3, progress=False),
                         out_dir=str(tmp_path / "run"))
    model_dir, res = run_pretrain(cfg)
    assert res.steps == 2 and "tok" in res.final
    meta = json.loads((model_dir / "metadata.json").read_text())
    assert "tiny random Llama" in meta["parts_used"]["teacher_lm"]
    # only the ViT is in the backbone file, SPD + projector beside it, no LM anywhere
    keys = load_file(str(model_dir / "model.safetensors")).keys()
    assert not any(k.startswith(("lm.", "visual.", "model.layers")) for k in keys)
    prefix_keys = load_file(str(model_dir / "vivid_prefix.safetensors")).keys()
    assert any(k.startswith("pooler.") for k in prefix_keys) and any(k.startswith("mlp.") for k in prefix_keys)
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)

    def tensor_keys(d, prefix=""):
        for k, v in (d.items() if isinstance(d, dict) else []):
            yield from tensor_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    names = list(tensor_keys(ckpt))
    assert any(".backbone." in f".{n}" for n in names) and not any(".lm." in f".{n}" for n in names)
    bb = from_pretrained(model_dir).eval()
    timm_model = load_timm(model_dir)
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(timm_model.forward_head(timm_model.forward_features(x), pre_logits=True),
                              bb.pooled(x), atol=1e-6)
    rec = export_onnx(bb, tmp_path / "m.onnx")
    assert rec["passed"] and rec["max_abs_diff"] < 1e-4
    # the saved SPD/projector reloads without the LM and reproduces the attention of the saved backbone
    from medvlp.methods.vivid import load_vivid_prefix_model

    pm = load_vivid_prefix_model(model_dir)
    with torch.no_grad():
        prefix, attn = pm.prefix(x)
    assert attn is not None and attn.shape[:2] == (2, 4)
    assert torch.allclose(attn.sum(-1), torch.ones_like(attn.sum(-1)), atol=1e-5)


def test_diagnostics_on_a_tiny_method(tmp_path):
    import numpy as np

    from medvlp.data.imageset import ImageSet
    from medvlp.data.transforms import Preprocess
    from medvlp.eval.report import write_html_report
    from medvlp.methods.vivid import VIVIDMethod, VIVIDOptions
    from medvlp.eval.attention_maps import attention_section
    from medvlp.methods.vivid_diagnostics import attention_diagnostics, generation_diagnostics, parse_generated_json
    from medvlp.models import create_model
    from medvlp.models.causal_lm import tiny_causal_lm

    assert parse_generated_json('x {"findings": {"a": {"state": null}}} trailing') == {"findings": {"a": {"state": None}}}
    assert parse_generated_json("{not json") is None
    bb = create_model("vit_tiny_p4_28")
    m = VIVIDMethod(bb, tiny_causal_lm(), VIVIDOptions())
    ds = ImageSet(name="x", images=np.random.default_rng(0).integers(0, 255, (3, 28, 28), dtype=np.uint8),
                  labels=np.zeros(3, int), task="binary", label_names=["a", "b"], split=np.array(["val"] * 3))
    tf = Preprocess.from_dict(bb.preprocess)
    gen = generation_diagnostics(m, ds, tf, n=2, max_new_tokens=5)
    assert gen["n"] == 2 and 0.0 <= gen["json_valid_rate"] <= 1.0
    att = attention_diagnostics(m, torch.stack([tf(i) for i in ds.images]))
    assert len(att["entropy_per_group"]) == 4 and att["maps"].shape == (3, 4, 7, 7)
    assert all(0 <= h <= att["uniform_entropy"] + 1e-5 for h in att["entropy_per_group"])
    html = write_html_report(tmp_path / "r.html", title="t", sections=[attention_section(m, ds, tf, n=1)])
    text = html.read_text()
    assert "data:image/png;base64" in text and "SPD attention maps" in text


def test_committed_vivid_quick_results_render_and_label_in_domain():
    from pathlib import Path

    import medvlp.bench.vivid as suite
    from medvlp.bench import SUITES, to_markdown

    assert {"vivid", "vivid_quick"} <= set(SUITES)
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "vivid_quick.json"
    if not path.exists():
        pytest.skip("no committed vivid_quick results")
    result = json.loads(path.read_text())
    md = to_markdown(result, suite)
    for r in result["rows"]:
        assert r["method"] in md
        if r["task"] == "nih1000":
            assert "in-domain" in r["method"]  # pretraining used NIH-1000 train labels
    assert "transfer" in md and "zero-shot" not in md.replace("not zero-shot", "")
