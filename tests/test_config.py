import pytest

from medvlp.config import StrictConfig, apply_overrides, load_config, save_config
from medvlp.errors import ConfigError


class Inner(StrictConfig):
    lr: float = 1e-3
    name: str = "a"


class Outer(StrictConfig):
    inner: Inner = Inner()
    epochs: int = 1


def test_overrides_are_parsed_as_yaml_scalars():
    data = apply_overrides({}, ["inner.lr=3e-4", "epochs=5", "inner.name=vit"])
    assert data == {"inner": {"lr": 3e-4, "name": "vit"}, "epochs": 5}


def test_yaml_then_overrides_then_roundtrip(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: 3\ninner:\n  name: x\n")
    cfg = load_config(Outer, p, ["inner.lr=0.5"])
    assert (cfg.epochs, cfg.inner.name, cfg.inner.lr) == (3, "x", 0.5)
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(Outer, tmp_path / "resolved.yaml") == cfg


def test_unknown_key_is_an_error_naming_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epoch: 3\n")  # typo
    with pytest.raises(ConfigError, match="c.yaml"):
        load_config(Outer, p)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides({}, ["epochs"])
