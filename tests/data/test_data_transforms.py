import numpy as np
import pytest
import torch

from medvlp.data.imageset import ImageSet
from medvlp.data.torch_dataset import TorchImageDataset
from medvlp.data.transforms import Preprocess, TrainAugment


def test_gray_to_three_channels_normalized():
    p = Preprocess(8, 3, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    img = np.full((8, 8), 255, np.uint8)
    out = p(img)
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32
    torch.testing.assert_close(out, torch.full((3, 8, 8), 2.0))


def test_rgb_to_one_channel_luma_and_resize():
    p = Preprocess(4, 1, mean=[0.0], std=[1.0])
    img = np.zeros((16, 12, 3), np.uint8)
    img[..., 0] = 255
    out = p(img)
    assert out.shape == (1, 4, 4)
    torch.testing.assert_close(out, torch.full((1, 4, 4), 0.299))


def test_resize_antialias_matches_torch_reference():
    rng = np.random.default_rng(0)
    img = rng.random((32, 40)).astype(np.float32)
    out = Preprocess(16, 1, [0.0], [1.0])(img)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img)[None, None], size=(16, 16),
                                          mode="bilinear", antialias=True, align_corners=False)[0]
    torch.testing.assert_close(out, ref)


def test_float_outside_unit_range_refused_and_dict_roundtrip():
    p = Preprocess.from_dict({"img_size": 8, "in_chans": 1, "mean": [0.1], "std": [0.2]})
    assert p.to_dict() == {"img_size": 8, "in_chans": 1, "mean": [0.1], "std": [0.2]}
    with pytest.raises(ValueError, match="CT window"):
        p(np.full((8, 8), -1000.0, np.float32))


def test_3d_volume():
    p = Preprocess(16, 1, [0.0], [1.0], is_3d=True)
    assert p(np.zeros((28, 28, 28), np.uint8)).shape == (1, 16, 16, 16)


def test_train_augment_uses_torch_rng_only():
    aug = TrainAugment(16, 1, [0.0], [1.0], rotate_deg=10, hflip=True)
    img = np.random.default_rng(1).integers(0, 255, (40, 30), dtype=np.uint8)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = aug(img)
    np.random.seed(123)  # other RNGs must not matter
    torch.set_rng_state(state)
    b = aug(img)
    torch.testing.assert_close(a, b)
    assert a.shape == (1, 16, 16) and not torch.equal(a, aug(img))
    assert TrainAugment(16, 1, [0.0], [1.0]).hflip is False


def test_torch_dataset_labels():
    imgs = np.zeros((4, 8, 8), np.uint8)
    ml = ImageSet("m", imgs, np.array([[1, np.nan]] * 4, np.float32), "multilabel", ["a", "b"],
                  np.array(["train"] * 4))
    ds = TorchImageDataset(ml, Preprocess(8, 1, [0.0], [1.0]))
    item = ds[2]
    assert item["index"] == 2 and item["image"].shape == (1, 8, 8)
    assert item["label"].dtype == torch.float32 and torch.isnan(item["label"][1])
    bi = ImageSet("b", imgs, np.array([0, 1, 1, 0]), "binary", ["n", "p"], np.array(["train"] * 4))
    lab = TorchImageDataset(bi, Preprocess(8, 1, [0.0], [1.0]))[1]["label"]
    assert lab.dtype == torch.long and lab.ndim == 0 and int(lab) == 1
