"""ONNX export of pooled features, checked against PyTorch with onnxruntime."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medvlp.export import OnnxParityError, export_folder, export_onnx
from medvlp.models import create_model, from_pretrained

ort = pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("name", ["vit_tiny_p4_28", "resnet18_28"])
def test_onnx_parity(name, tmp_path):
    torch.manual_seed(0)
    b = create_model(name, pretrained=False)
    result = export_onnx(b, tmp_path / "m.onnx")
    assert result["passed"] and result["max_abs_diff"] < 1e-4
    assert result["opset"] == 17 and result["path"] == str(tmp_path / "m.onnx")
    assert b.training  # export leaves the caller's mode alone

    # an independent check at a batch size the export never saw (dynamic batch axis)
    b.eval()
    x = torch.randn(5, b.in_chans, b.img_size, b.img_size)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        expected = b.pooled(x).numpy()
    assert got.shape == (5, b.feature_dim)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


def test_parity_failure_raises(tmp_path):
    b = create_model("vit_tiny_p4_28", pretrained=False)
    with pytest.raises(OnnxParityError, match="m.onnx: ONNX and PyTorch pooled features differ"):
        export_onnx(b, tmp_path / "m.onnx", atol=1e-12)  # float32 kernels never agree to 1e-12


def test_export_folder(tmp_path):
    torch.manual_seed(0)
    b = create_model("resnet18_28", pretrained=False).eval()
    folder = export_folder(b, tmp_path / "out", metadata={"method": "supervised"})
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["config.json", "metadata.json", "model.onnx", "model.safetensors",
                     "preprocess.json"]
    meta = json.loads((folder / "metadata.json").read_text())
    assert meta["method"] == "supervised"
    assert meta["onnx"]["passed"] is True and meta["onnx"]["path"] == "model.onnx"
    assert meta["onnx"]["max_abs_diff"] < 1e-4
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(from_pretrained(folder)(x), b(x))
