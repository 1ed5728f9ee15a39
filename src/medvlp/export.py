"""Export a backbone for use outside medvlp: a pretrained folder (timm-loadable) plus ONNX.

The ONNX graph maps a preprocessed image batch ``(B, in_chans, img_size, img_size)`` (float32,
normalised per preprocess.json) to pooled features ``(B, feature_dim)``. Every export is checked
against PyTorch with onnxruntime; the parity record goes into metadata.json.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medvlp.errors import MedvlpError
from medvlp.models.backbone import Backbone
from medvlp.models.hub import METADATA_FILE, save_pretrained

ONNX_FILE = "model.onnx"


class OnnxParityError(MedvlpError):
    """The exported ONNX graph does not reproduce the PyTorch outputs within tolerance."""


class _PooledFeatures(nn.Module):
    """``x -> backbone.pooled(x)``: the one output the ONNX graph exposes."""

    def __init__(self, backbone: Backbone):
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone.pooled(x)


def export_onnx(backbone: Backbone, path: str | Path, *, opset: int = 17, batch_size: int = 2,
                dynamic_batch: bool = True, atol: float = 1e-4, seed: int = 0) -> dict[str, Any]:
    """Export ``backbone.pooled`` to ONNX at ``path`` and check parity with onnxruntime.

    Parity: ``max_abs_diff = max |f_torch(x) - f_onnx(x)|`` over a random normal batch ``x`` of
    ``batch_size`` images (seeded by ``seed``; with ``dynamic_batch`` a second batch size is checked
    too). Returns ``{"path", "max_abs_diff", "passed", "opset", "atol", "batch_sizes"}``; raises
    ``OnnxParityError`` when ``max_abs_diff > atol``.

    Uses the TorchScript exporter (``dynamo=False``): the dynamo exporter needs ``onnxscript``,
    which medvlp does not depend on.
    """
    import onnxruntime as ort

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    was_training = backbone.training
    device = next(backbone.parameters()).device
    module = _PooledFeatures(backbone).eval().to("cpu")
    shape = (backbone.in_chans, backbone.img_size, backbone.img_size)
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(batch_size, *shape, generator=gen)
    try:
        with warnings.catch_warnings():
            # timm asserts the input size in Python; the tracer warns that these become constants.
            # They are meant to: the image size is fixed by design, only the batch axis is dynamic
            # and the parity check below runs a second batch size to prove it.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            torch.onnx.export(
                module, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=["image"], output_names=["features"],
                dynamic_axes=({"image": {0: "batch"}, "features": {0: "batch"}}
                              if dynamic_batch else None),
            )
        sizes = [batch_size, batch_size + 1] if dynamic_batch else [batch_size]
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        max_diff = 0.0
        for n in sizes:
            x = example if n == batch_size else torch.randn(n, *shape, generator=gen)
            with torch.no_grad():
                expected = module(x).numpy()
            (got,) = session.run(["features"], {"image": x.numpy()})
            if got.shape != expected.shape:
                raise OnnxParityError(f"{path}: ONNX output shape {got.shape} != PyTorch "
                                      f"{expected.shape} for batch {n}")
            max_diff = max(max_diff, float(abs(got - expected).max()))
    finally:
        backbone.to(device).train(was_training)
    result = {"path": str(path), "max_abs_diff": max_diff, "passed": max_diff <= atol,
              "opset": opset, "atol": atol, "batch_sizes": sizes}
    if not result["passed"]:
        raise OnnxParityError(f"{path}: ONNX and PyTorch pooled features differ by {max_diff:.3g} "
                              f"> atol={atol}")
    return result


def export_folder(backbone: Backbone, folder: str | Path, onnx: bool = True,
                  metadata: dict[str, Any] | None = None, *, opset: int = 17) -> Path:
    """``save_pretrained`` + ``model.onnx`` with its parity record in ``metadata.json["onnx"]``.

    The folder loads offline with ``medvlp.models.from_pretrained``, as a plain timm model (see
    ``medvlp.models.load_timm``) and with onnxruntime.
    """
    folder = save_pretrained(backbone, folder, metadata)
    if onnx:
        record = export_onnx(backbone, folder / ONNX_FILE, opset=opset)
        record["path"] = ONNX_FILE  # relative, so the folder can be moved
        meta_path = folder / METADATA_FILE
        meta = json.loads(meta_path.read_text())
        meta["onnx"] = record
        tmp = meta_path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        tmp.replace(meta_path)
    return folder
