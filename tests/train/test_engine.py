from __future__ import annotations

import importlib.util

import pytest
import torch
from torch import nn

from medvlp.config import load_config
from medvlp.errors import ConfigError
from medvlp.methods.base import trainable_state_dict
from medvlp.train import TrainConfig, fit

from conftest import FrozenEncoderMethod, RandomRecords
from train_script import PneumoniaSubset, build_method


def _cfg(**kw) -> TrainConfig:
    base = dict(batch_size=8, lr=1e-2, log_every=1, device="cpu", progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_grad_accumulation_matches_the_doubled_batch(tmp_path):
    data = PneumoniaSubset(n=64)
    accum_method, big_method = build_method(), build_method()
    accum = fit(accum_method, data, _cfg(max_steps=4, batch_size=8, grad_accum=2, lr=1e-3),
                tmp_path / "accum")
    big = fit(big_method, data, _cfg(max_steps=4, batch_size=16, lr=1e-3), tmp_path / "big")
    # Same samples per step (same sampler order); only the summation order of the gradient
    # differs (two half-batch means averaged vs one mean), hence float32-level tolerances.
    for a, b in zip(accum.history, big.history, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5, abs=1e-6)
        assert a["acc"] == b["acc"] and a["lr"] == b["lr"]
    for k, v in trainable_state_dict(big_method).items():
        torch.testing.assert_close(trainable_state_dict(accum_method)[k], v, rtol=1e-4, atol=1e-5)


def test_epochs_config_and_records(tmp_path):
    logs = []
    result = fit(FrozenEncoderMethod(), RandomRecords(n=50), _cfg(epochs=2, log_every=3),
                 tmp_path, on_log=logs.append)
    # 50 samples // batch 8 = 6 steps per epoch (the last 2 samples of each epoch are left out)
    assert result.steps == 12 and result.epochs == 2.0
    assert [r["step"] for r in result.history] == [3, 6, 9, 12] and logs == result.history
    assert result.history[1]["epoch"] == 1.0
    assert set(result.final) == {"loss", "pos_rate", "grad_norm", "lr"}
    assert set(result.history[0]) == {"step", "epoch", "loss", "pos_rate", "grad_norm", "lr",
                                      "images_per_s", "time"}
    assert load_config(TrainConfig, tmp_path / "train_config.yaml") == _cfg(epochs=2, log_every=3)


def test_bf16_autocast_runs_on_cpu(tmp_path):
    result = fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=2, precision="bf16"),
                 tmp_path)
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final["loss"]))


def test_clear_errors(tmp_path):
    frozen = FrozenEncoderMethod()
    frozen.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        fit(frozen, RandomRecords(), _cfg(), tmp_path)
    with pytest.raises(ConfigError, match="smaller than one optimizer step"):
        fit(FrozenEncoderMethod(), RandomRecords(n=15), _cfg(grad_accum=2), tmp_path)
    with pytest.raises(ConfigError, match="fp16"):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(precision="fp16"), tmp_path)

    class NoDict(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(1))

        def forward(self, batch):
            return self.w.sum()

    with pytest.raises(TypeError, match="must return a dict with a 'loss' key"):
        fit(NoDict(), RandomRecords(), _cfg(), tmp_path)

    class Diverges(FrozenEncoderMethod):
        def forward(self, batch):
            out = super().forward(batch)
            return {**out, "loss": out["loss"] * float("nan")}

    with pytest.raises(FloatingPointError, match="loss is nan at step 1"):
        fit(Diverges(), RandomRecords(), _cfg(), tmp_path)


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is not None,
                    reason="tensorboard is installed")
def test_tensorboard_without_package_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="needs the 'tensorboard' package"):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(tensorboard=True), tmp_path)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError):
        TrainConfig(min_lr_ratio=1.5)
    with pytest.raises(ValueError):
        TrainConfig(optimizer="adam")


@pytest.mark.skipif(importlib.util.find_spec("tensorboard") is None, reason="needs tensorboard")
def test_tensorboard_events_are_written(tmp_path):
    fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=2, tensorboard=True), tmp_path)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_progress_bar_on_a_terminal(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    result = fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=3, progress=True), tmp_path)
    assert result.steps == 3 and "3/3" in capsys.readouterr().out


def test_on_log_may_switch_to_eval_mode(tmp_path):
    modes = []

    class Records(FrozenEncoderMethod):
        def forward(self, batch):
            modes.append(self.head.training)
            return super().forward(batch)

    method = Records()
    fit(method, RandomRecords(), _cfg(max_steps=3), tmp_path, on_log=lambda r: method.eval())
    assert modes == [True, True, True]
