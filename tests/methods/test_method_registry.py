import pytest

from medvlp.errors import ConfigError
from medvlp.methods.registry import BuildContext, MethodBuild, get_method_builder, list_methods, register_method


def test_builtin_methods_are_listed():
    assert {"supervised", "vivid", "mflag", "lvmmed", "simclr", "ct3d"} <= set(list_methods())


def test_unknown_method_names_the_known_ones():
    with pytest.raises(ConfigError, match="supervised"):
        get_method_builder("no_such_method")


def test_registered_builder_is_returned():
    @register_method("unit_test_method")
    def build(ctx: BuildContext) -> MethodBuild:
        return MethodBuild(method=None, dataset=[])

    assert get_method_builder("unit_test_method") is build
    assert "unit_test_method" in list_methods()


def test_supervised_builder_wraps_the_train_set():
    import torch

    from medvlp.data import load_dataset
    from medvlp.models import create_model

    tiny_imageset = load_dataset("breastmnist").split_view("val")

    backbone = create_model("vit_tiny_p4_28", depth=1)
    built = get_method_builder("supervised")(BuildContext(backbone=backbone, train_set=tiny_imageset,
                                                          transform=lambda im: torch.zeros(1, 28, 28),
                                                          options={}))
    assert len(built.dataset) == len(tiny_imageset)
    assert built.method.backbone is backbone
