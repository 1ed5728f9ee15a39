from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from medvlp.losses import masked_bce_with_logits
from medvlp.methods import SupervisedMethod
from medvlp.models import Backbone, create_model


def _backbone() -> Backbone:
    torch.manual_seed(0)
    return create_model("vit_tiny_p4_28", depth=2)


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(5, 1, 28, 28, generator=torch.Generator().manual_seed(1))


def test_binary_loss_and_accuracy(images):
    m = SupervisedMethod(_backbone(), 1, "binary").eval()
    labels = torch.tensor([[0], [1], [1], [0], [1]])  # (B, 1) as stored in MedMNIST
    out = m({"image": images, "label": labels})
    logit = m.head(m.backbone.pooled(images))[:, 0]
    assert m.predict(images).shape == (5, 1)
    assert torch.allclose(out["loss"], F.binary_cross_entropy_with_logits(logit, labels[:, 0].float()))
    assert out["acc"].item() == pytest.approx(((logit > 0).long() == labels[:, 0]).float().mean().item())


def test_multiclass_loss_and_accuracy(images):
    m = SupervisedMethod(_backbone(), 3, "multiclass").eval()
    labels = torch.tensor([0, 2, 1, 1, 0])
    out = m({"image": images, "label": labels})
    logits = m.predict(images)
    assert torch.allclose(out["loss"], F.cross_entropy(logits, labels))
    assert out["acc"].item() == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_multilabel_ignores_missing_labels(images):
    m = SupervisedMethod(_backbone(), 4, "multilabel").eval()
    labels = torch.tensor([[1, 0, float("nan"), 1]] * 5)
    out = m({"image": images, "label": labels})
    assert set(out) == {"loss"}
    assert torch.allclose(out["loss"], masked_bce_with_logits(m.predict(images), labels))
    out["loss"].backward()
    assert m.head.weight.grad[2].abs().sum() == 0 and m.head.weight.grad[0].abs().sum() > 0


def test_bad_arguments_and_labels(images):
    with pytest.raises(ValueError, match="num_outputs=2, expected 1"):
        SupervisedMethod(_backbone(), 2, "binary")
    with pytest.raises(ValueError, match="expected >= 2"):
        SupervisedMethod(_backbone(), 1, "multiclass")
    m = SupervisedMethod(_backbone(), 3, "multiclass")
    with pytest.raises(ValueError, match=r"batch\['label'\] has shape \(5, 3\): expected \(5,\)"):
        m({"image": images, "label": torch.zeros(5, 3)})
    with pytest.raises(KeyError, match="no 'label'"):
        m({"image": images})
