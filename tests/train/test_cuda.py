"""GPU paths of the engine (bf16 autocast, fp16 + GradScaler, CUDA RNG in checkpoints); skipped
without CUDA."""
from __future__ import annotations

import pytest
import torch

from medvlp.methods.base import trainable_state_dict
from medvlp.train import TrainConfig, fit

from conftest import FrozenEncoderMethod, RandomRecords

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=8, lr=1e-2, ckpt_every=3, log_every=1, device="cuda",
                progress=False)
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("precision", ["auto", "fp16"])
def test_mixed_precision_trains_and_checkpoints(tmp_path, precision):
    method = FrozenEncoderMethod()
    result = fit(method, RandomRecords(), _cfg(precision=precision), tmp_path)
    assert result.steps == 6 and all(torch.isfinite(torch.tensor(r["loss"])) for r in result.history)
    assert next(method.parameters()).device.type == "cuda"
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["rng"][0]["cuda"], "CUDA RNG state missing"
    assert all(v.device.type == "cpu" for v in state["model"].values())
    assert (state["scaler"] is not None) == (precision == "fp16")


def test_resume_on_cuda_reproduces_the_run(tmp_path):
    ref = FrozenEncoderMethod()
    ref_result = fit(ref, RandomRecords(), _cfg(), tmp_path / "ref")

    def crash_at_4(record):
        if record["step"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(), tmp_path / "run", on_log=crash_at_4)
    resumed = FrozenEncoderMethod()
    result = fit(resumed, RandomRecords(), _cfg(), tmp_path / "run", resume=True)
    assert [r["loss"] for r in result.history] == [r["loss"] for r in ref_result.history]
    for k, v in trainable_state_dict(ref).items():
        assert torch.equal(v, trainable_state_dict(resumed)[k]), k
