"""The feature contract, generated over the whole registry (random init, small inputs)."""
from __future__ import annotations

import time

import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.models import PretrainedUnavailableError, create_model, get_model_config, list_models

from models_testutil import batch_for, small_img_size


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", list_models())
def test_feature_contract(name, in_chans):
    img = small_img_size(name)
    b = create_model(name, pretrained=False, in_chans=in_chans, img_size=img).eval()
    x = batch_for(b, batch=2)
    assert x.shape == (2, in_chans, img, img)
    with torch.no_grad():
        feats = b.forward_features(x)
        pooled = b.pooled(x)
        tokens = b.patch_tokens(x)
    cfg = b.config
    if cfg["kind"] == "vit":
        patch = cfg["timm_kwargs"]["patch_size"]
        n_patches = (img // patch) ** 2
        assert feats.shape == (2, 1 + n_patches, b.feature_dim)  # CLS + patches
        assert tokens.shape == (2, n_patches, b.feature_dim)
        torch.testing.assert_close(pooled, feats[:, 0], rtol=0, atol=0)  # CLS pooling
    else:
        assert feats.ndim == 4 and feats.shape[:2] == (2, b.feature_dim)
        torch.testing.assert_close(pooled, feats.mean(dim=(2, 3)), rtol=1e-6, atol=1e-6)
        assert tokens.shape == (2, feats.shape[2] * feats.shape[3], b.feature_dim)
    assert pooled.shape == (2, b.feature_dim)
    assert torch.isfinite(pooled).all()
    with torch.no_grad():
        torch.testing.assert_close(b(x), pooled, rtol=0, atol=0)
    pre = b.preprocess
    assert pre["in_chans"] == in_chans and pre["img_size"] == img
    assert len(pre["mean"]) == len(pre["std"]) == in_chans


def test_vit_avg_pool_matches_timm_head():
    b = create_model("vit_tiny_p4_28", pretrained=False, global_pool="avg").eval()
    x = batch_for(b)
    with torch.no_grad():
        feats = b.forward_features(x)
        # timm applies fc_norm after averaging the patch tokens
        expected = b.model.fc_norm(feats[:, b.num_prefix_tokens:].mean(1))
        torch.testing.assert_close(b.pooled(x), expected)
    assert b.config["global_pool"] == "avg" and b.config["timm_kwargs"]["global_pool"] == "avg"


def test_random_init_follows_caller_seed():
    torch.manual_seed(3)
    a = create_model("vit_tiny_p4_28", pretrained=False)
    torch.manual_seed(3)
    b = create_model("vit_tiny_p4_28", pretrained=False)
    torch.manual_seed(4)
    c = create_model("vit_tiny_p4_28", pretrained=False)
    wa, wb, wc = (m.model.patch_embed.proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_img_size_changes_token_count_and_config():
    b = create_model("vit_tiny_p4_28", pretrained=False, img_size=32)
    assert b.config["timm_kwargs"]["img_size"] == 32
    assert b.forward_features(torch.zeros(1, 1, 32, 32)).shape == (1, 1 + 64, 192)
    with pytest.raises(ConfigError, match="not a multiple of patch_size=4"):
        create_model("vit_tiny_p4_28", pretrained=False, img_size=30)


def test_in_chans_maps_mean_std():
    b = create_model("resnet18", pretrained=False, in_chans=1)
    assert b.preprocess["mean"] == [pytest.approx((0.485 + 0.456 + 0.406) / 3)]
    b3 = create_model("vit_tiny_p4_28", pretrained=False, in_chans=3)
    assert b3.preprocess["mean"] == [0.5, 0.5, 0.5]
    assert b3.model.patch_embed.proj.weight.shape[1] == 3


def test_resnet18_28_keeps_a_spatial_map():
    b = create_model("resnet18_28", pretrained=False).eval()
    assert b.forward_features(torch.zeros(1, 1, 28, 28)).shape == (1, 512, 4, 4)
    plain = create_model("resnet18", pretrained=False, in_chans=1, img_size=28).eval()
    assert plain.forward_features(torch.zeros(1, 1, 28, 28)).shape == (1, 512, 1, 1)


def test_timm_overrides_and_drop_path_are_recorded():
    b = create_model("resnet18", pretrained=False, output_stride=16, drop_path_rate=0.1)
    assert b.config["timm_kwargs"]["output_stride"] == 16
    assert b.config["timm_kwargs"]["drop_path_rate"] == 0.1


def test_timm_pretrained_offline_fails_fast_and_says_why(no_network):
    start = time.monotonic()
    with pytest.raises(PretrainedUnavailableError, match="HF_HUB_OFFLINE"):
        create_model("vit_tiny_p4_28", pretrained="timm")
    with pytest.raises(PretrainedUnavailableError, match="hf-hub:someone/weights"):
        create_model("resnet18", pretrained="hf-hub:someone/weights")
    assert time.monotonic() - start < 5


def test_timm_pretrained_without_network_fails_fast(no_network, monkeypatch):
    # not flagged offline: the reachability probe must notice, instead of a minute of retries
    monkeypatch.delenv("HF_HUB_OFFLINE")
    for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    start = time.monotonic()
    with pytest.raises(PretrainedUnavailableError, match="hub is unreachable"):
        create_model("resnet18", pretrained="timm")
    assert time.monotonic() - start < 5


def test_bad_pretrained_values():
    with pytest.raises(ConfigError, match="ambiguous"):
        create_model("resnet18", pretrained=True)
    with pytest.raises(ConfigError, match="not 'timm'.*existing folder"):
        create_model("resnet18", pretrained="/no/such/folder")


def test_default_pretrained_is_random_except_bundled():
    assert get_model_config("resnet18")["default_pretrained"] is None
    assert create_model("resnet18", img_size=32).metadata["initial_weights"] == "random init"
    assert get_model_config("efficientnet_lite0_imagenet")["default_pretrained"] == "imagenet"
