from __future__ import annotations

import json

import pytest

from medvlp.errors import ConfigError, DataError
from medvlp.models import get_model_config, list_models, register_model
from medvlp.models import registry

REQUIRED = {"vit_tiny_p4_28", "vit_small_p4_28", "vit_tiny_p8_64", "vit_tiny_p16_224",
            "vit_small_p16_224", "vit_base_p16_224", "resnet18", "resnet50",
            "efficientnet_lite0_imagenet"}


@pytest.fixture
def clean_registry(monkeypatch):
    """Registrations made by a test do not leak into the others."""
    registry._ensure_builtins()
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


def _user_cfg(name="my_vit"):
    cfg = get_model_config("vit_tiny_p4_28")
    cfg.update(name=name, timm_kwargs={"patch_size": 7, "img_size": 28}, notes="user model")
    return cfg


def test_builtin_models_registered_and_sorted():
    names = list_models()
    assert REQUIRED <= set(names)
    assert names == sorted(names)


def test_list_models_pattern():
    assert list_models("vit_tiny_*") == ["vit_tiny_p16_224", "vit_tiny_p4_28", "vit_tiny_p8_64"]
    assert list_models("resnet*") == ["resnet18", "resnet18_28", "resnet50"]
    assert list_models("nothing*") == []


def test_configs_are_data_with_timm_names():
    cfg = get_model_config("vit_tiny_p4_28")
    assert cfg["timm_name"] == "vit_tiny_patch16_224"
    assert cfg["timm_kwargs"] == {"patch_size": 4, "img_size": 28}
    assert cfg["in_chans"] == 1 and cfg["mean"] == [0.5]
    # a copy: editing it does not change the registry
    cfg["img_size"] = 999
    assert get_model_config("vit_tiny_p4_28")["img_size"] == 28


def test_unknown_name_lists_close_names():
    with pytest.raises(ConfigError, match="unknown model 'vit_tiny_p4'.*vit_tiny_p4_28"):
        get_model_config("vit_tiny_p4")


def test_register_dict(clean_registry):
    assert register_model(_user_cfg()) == "my_vit"
    assert "my_vit" in list_models("my_*")
    assert get_model_config("my_vit")["timm_kwargs"]["patch_size"] == 7
    with pytest.raises(ConfigError, match="already registered"):
        register_model(_user_cfg())
    register_model({**_user_cfg(), "notes": "v2"}, overwrite=True)
    assert get_model_config("my_vit")["notes"] == "v2"


def test_register_json_file(clean_registry, tmp_path):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps(_user_cfg("from_file")))
    assert register_model(path) == "from_file"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="bad.json"):
        register_model(bad)


@pytest.mark.parametrize("change, match", [
    ({"kind": "transformer"}, "kind"),
    ({"img_size": 30}, "multiple of patch_size"),
    ({"mean": [0.5, 0.5]}, "mean/std"),
    ({"unknown_key": 1}, "unknown_key"),
])
def test_invalid_config_rejected(clean_registry, change, match):
    with pytest.raises(ConfigError, match=match):
        register_model({**_user_cfg("broken"), **change})
