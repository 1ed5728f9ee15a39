"""2D -> 3D transfer: a 1-slice volume reproduces the 2D ViT; slices interact only in 3D blocks."""
from __future__ import annotations

import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.models import create_model, save_pretrained
from medvlp.models.volume_vit import VolumeViT, _rope, load_2d_backbone


@pytest.fixture(scope="module")
def vit2d():
    torch.manual_seed(0)
    return create_model("vit_tiny_p4_28", pretrained=False, depth=3).eval()


def _as_2d_input(img):
    return (img[:, None] - 0.5) / 0.5  # the registry preprocess: mean 0.5, std 0.5, 1 channel


@pytest.mark.parametrize("depth_pos", ["rope", "embed", "none"])
def test_one_slice_volume_equals_the_2d_model(vit2d, depth_pos):
    v = VolumeViT(vit2d, n_3d_blocks=2, depth_pos=depth_pos, moe_blocks=[1, 2], prompt_dim=8).eval()
    img = torch.rand(2, 28, 28)
    with torch.no_grad():
        ref = vit2d.forward_features(_as_2d_input(img))
        out = v(img[:, None], torch.randn(2, 8))
        pooled = v.pooled(img[:, None], torch.randn(2, 8))
    assert out.shape == (2, 1, 50, 192)
    assert torch.allclose(out[:, 0], ref, atol=1e-5)
    assert torch.allclose(pooled, vit2d.pooled(_as_2d_input(img)), atol=1e-5)


def test_saved_2d_folder_loads_unchanged(vit2d, tmp_path):
    save_pretrained(vit2d, tmp_path / "m")
    v = VolumeViT(load_2d_backbone(tmp_path / "m"), n_3d_blocks=1).eval()
    img = torch.rand(1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(v(img[:, None])[:, 0], vit2d.forward_features(_as_2d_input(img)), atol=1e-5)


def test_slice_pair_of_identical_slices_equals_one_slice(vit2d):
    img = torch.rand(1, 1, 28, 28)
    a = VolumeViT(vit2d, n_3d_blocks=1, slice_patch=2).eval()
    b = VolumeViT(vit2d, n_3d_blocks=1, slice_patch=1).eval()
    with torch.no_grad():
        assert torch.allclose(a(img.repeat(1, 2, 1, 1)), b(img), atol=1e-5)
        assert a(torch.rand(1, 5, 28, 28)).shape[1] == 3  # odd count: last slice repeated


@pytest.mark.parametrize("n3d,mixes", [(0, False), (1, True)])
def test_slices_interact_only_through_3d_blocks(vit2d, n3d, mixes):
    v = VolumeViT(vit2d, n_3d_blocks=n3d).eval()
    vol = torch.rand(1, 3, 28, 28)
    vol2 = vol.clone()
    vol2[:, 2] = torch.rand(28, 28)
    with torch.no_grad():
        changed = not torch.allclose(v(vol)[:, 0], v(vol2)[:, 0], atol=1e-6)
    assert changed == mixes


def test_depth_rope_is_relative_and_identity_at_zero():
    q, k = torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 8)
    pos = torch.tensor([0, 0, 0, 0])
    assert torch.equal(_rope(q, pos, 4, 100.0), q)
    s1 = (_rope(q, torch.tensor([1, 1, 1, 1]), 4, 100.0) * _rope(k, torch.tensor([3, 3, 3, 3]), 4, 100.0)).sum(-1)
    s2 = (_rope(q, torch.tensor([5, 5, 5, 5]), 4, 100.0) * _rope(k, torch.tensor([7, 7, 7, 7]), 4, 100.0)).sum(-1)
    assert torch.allclose(s1, s2, atol=1e-5)  # q.k depends on the slice offset only


def test_rope_changes_3d_attention_across_slices(vit2d):
    vol = torch.rand(1, 3, 28, 28)
    with torch.no_grad():
        a = VolumeViT(vit2d, n_3d_blocks=1, depth_pos="rope").eval()(vol)
        b = VolumeViT(vit2d, n_3d_blocks=1, depth_pos="none").eval()(vol)
    assert not torch.allclose(a, b, atol=1e-5)


def test_bad_configuration_errors(vit2d):
    with pytest.raises(ConfigError):
        VolumeViT(vit2d, n_3d_blocks=9)
    with pytest.raises(ConfigError):
        VolumeViT(vit2d, moe_blocks=[1])  # no prompt_dim
    with pytest.raises(ValueError, match="28x28"):
        VolumeViT(vit2d)(torch.rand(1, 2, 32, 32))
    with pytest.raises(ConfigError):
        VolumeViT(create_model("resnet18_28", pretrained=False))
