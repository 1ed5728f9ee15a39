"""Save/load folders: bit-identical round trips, plain timm loading, offline, corrupt files."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file

from medvlp.errors import ConfigError, DataError
from medvlp.models import (create_model, from_pretrained, list_models, load_pretrained, load_timm,
                           save_pretrained)

from models_testutil import HEAVY, batch_for, small_img_size


def _pooled(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", list_models())
def test_roundtrip_and_plain_timm(name, tmp_path):
    img = small_img_size(name)
    torch.manual_seed(0)
    b = create_model(name, pretrained=False, img_size=img).eval()
    x = batch_for(b, batch=1 if name in HEAVY else 2)
    folder = save_pretrained(b, tmp_path / "m", metadata={"method": "test", "data": "none"})
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "metadata.json", "model.safetensors", "preprocess.json"]

    loaded = from_pretrained(folder)
    assert not loaded.training
    assert torch.equal(_pooled(loaded, x), _pooled(b, x))  # bit-identical
    assert loaded.config == b.config and loaded.preprocess == b.preprocess
    assert loaded.metadata["method"] == "test"

    # keys exactly as timm names them
    assert set(load_file(str(folder / "model.safetensors"))) == set(b.model.state_dict())
    plain = load_timm(folder)
    assert type(plain).__module__.startswith("timm.")
    with torch.no_grad():
        expected = plain.forward_head(plain.forward_features(x), pre_logits=True)
    assert torch.equal(_pooled(b, x), expected)


@pytest.mark.parametrize("name, global_pool", [("vit_tiny_p4_28", "token"),
                                               ("vit_tiny_p4_28", "avg"), ("resnet18_28", "avg")])
def test_plain_timm_code_from_the_docstring(name, global_pool, tmp_path):
    """The three lines of plain timm code shown in ``load_timm``'s docstring, written out."""
    b = create_model(name, pretrained=False, global_pool=global_pool).eval()
    folder = save_pretrained(b, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    plain = timm.create_model(cfg["timm_name"], pretrained=False, num_classes=0, **cfg["timm_kwargs"])
    plain.load_state_dict(load_file(str(folder / "model.safetensors")))
    plain.eval()
    x = batch_for(b)
    with torch.no_grad():
        assert torch.equal(plain(x), _pooled(b, x))
        assert torch.equal(plain.forward_head(plain.forward_features(x), pre_logits=True),
                           _pooled(b, x))


def test_metadata_contents(tmp_path):
    b = create_model("vit_tiny_p4_28", pretrained=False)
    folder = save_pretrained(b, tmp_path / "m", metadata={"metrics": {"auroc": 0.9},
                                                          "parts used": ["backbone"]})
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["medvlp_version"] == "0.1.0" and meta["created"]
    assert meta["metrics"] == {"auroc": 0.9} and meta["parts used"] == ["backbone"]
    assert meta["initial_weights"] == "random init"
    pre = json.loads((folder / "preprocess.json").read_text())
    assert pre == {"img_size": 28, "in_chans": 1, "mean": [0.5], "std": [0.5]}


def test_save_replaces_existing_folder_without_leftovers(tmp_path):
    torch.manual_seed(0)
    first = create_model("resnet18_28", pretrained=False)
    save_pretrained(first, tmp_path / "m")
    torch.manual_seed(1)
    second = create_model("resnet18_28", pretrained=False).eval()
    save_pretrained(second, tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp/backup folders left
    x = batch_for(second)
    assert torch.equal(_pooled(from_pretrained(tmp_path / "m"), x), _pooled(second, x))


def test_from_pretrained_needs_no_network(tmp_path, no_network):
    b = create_model("vit_tiny_p4_28", pretrained=False).eval()
    save_pretrained(b, tmp_path / "m")
    x = batch_for(b)
    assert torch.equal(_pooled(from_pretrained(tmp_path / "m"), x), _pooled(b, x))
    assert torch.equal(_pooled(load_pretrained(tmp_path / "m"), x), _pooled(b, x))
    via_create = create_model("vit_tiny_p4_28", pretrained=tmp_path / "m").eval()
    assert torch.equal(_pooled(via_create, x), _pooled(b, x))


def test_corrupt_safetensors_names_the_file(tmp_path):
    folder = save_pretrained(create_model("resnet18_28", pretrained=False), tmp_path / "m")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"model\.safetensors: corrupt"):
        from_pretrained(folder)


@pytest.mark.parametrize("missing", ["config.json", "model.safetensors", "preprocess.json",
                                     "metadata.json"])
def test_missing_file_names_the_file(tmp_path, missing):
    folder = save_pretrained(create_model("resnet18_28", pretrained=False), tmp_path / "m")
    (folder / missing).unlink()
    with pytest.raises(DataError, match=missing.replace(".", r"\.") + ": missing"):
        from_pretrained(folder)


def test_weights_of_another_architecture_name_the_file(tmp_path):
    folder = save_pretrained(create_model("resnet18_28", pretrained=False), tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["timm_name"] = "resnet34"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(DataError, match=r"model\.safetensors: weights do not fit"):
        from_pretrained(folder)


def test_load_with_fewer_channels_sums_first_conv(tmp_path):
    b3 = create_model("resnet18", pretrained=False, img_size=32).eval()
    folder = save_pretrained(b3, tmp_path / "m")
    b1 = from_pretrained(folder, in_chans=1).eval()
    assert b1.preprocess["in_chans"] == 1 and len(b1.preprocess["mean"]) == 1
    grey = batch_for(b1)
    # summed weights on a grey image == RGB weights on that image repeated on 3 channels
    torch.testing.assert_close(_pooled(b1, grey), _pooled(b3, grey.repeat(1, 3, 1, 1)),
                               rtol=1e-5, atol=1e-5)


def test_create_model_with_folder_of_another_model(tmp_path):
    save_pretrained(create_model("resnet18_28", pretrained=False), tmp_path / "m")
    with pytest.raises(ConfigError, match="holds model 'resnet18_28', not 'resnet18'"):
        create_model("resnet18", pretrained=tmp_path / "m")
