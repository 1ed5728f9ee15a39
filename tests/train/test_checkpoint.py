from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from medvlp.errors import ConfigError, DataError
from medvlp.methods.base import load_trainable_state_dict, trainable_state_dict
from medvlp.train import TrainConfig, fit, load_checkpoint
from medvlp.train.checkpoint import capture_rng_state, restore_rng_state

from conftest import FrozenEncoderMethod, RandomRecords


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=9, batch_size=8, lr=1e-2, warmup_steps=2, ckpt_every=3, log_every=2,
                device="cpu", progress=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_checkpoint_loads_weights_only_and_holds_only_trainable_state(tmp_path):
    method = FrozenEncoderMethod()
    frozen_before = {k: v.clone() for k, v in method.encoder.state_dict().items()}
    fit(method, RandomRecords(), _cfg(max_steps=4), tmp_path)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert set(state["model"]) == {
        "head.0.weight", "head.0.bias", "head.4.weight", "head.4.bias",
        "head.1.weight", "head.1.bias",  # trainable BatchNorm: its buffers come along
        "head.1.running_mean", "head.1.running_var", "head.1.num_batches_tracked"}
    assert state["step"] == 4 and state["epoch"] == 0 and state["batch_in_epoch"] == 4
    assert len(state["rng"]) == 1 and isinstance(state["rng"][0]["torch"], torch.Tensor)
    n_trainable = sum(1 for p in method.parameters() if p.requires_grad)
    assert sum(len(g["params"]) for g in state["optimizer"]["param_groups"]) == n_trainable
    # The frozen encoder (incl. BatchNorm statistics: kept in eval mode) did not move.
    for k, v in method.encoder.state_dict().items():
        assert torch.equal(v, frozen_before[k]), k
    assert not method.encoder.training and method.head.training


def test_trainable_state_roundtrip_and_mismatch_names_source():
    a, b = FrozenEncoderMethod(seed=0), FrozenEncoderMethod(seed=1)
    load_trainable_state_dict(b, trainable_state_dict(a), source="x.pt")
    assert all(torch.equal(v, trainable_state_dict(b)[k]) for k, v in trainable_state_dict(a).items())
    sd = trainable_state_dict(a)
    sd.pop("head.0.bias")
    with pytest.raises(DataError, match=r"x\.pt: .*missing keys \['head.0.bias'\]"):
        load_trainable_state_dict(b, sd, source="x.pt")


def test_interrupted_run_resumes_to_the_identical_result(tmp_path):
    """In-process version of the kill test: a crash right after step 4 (checkpoint at 3)."""
    ref = FrozenEncoderMethod()
    ref_result = fit(ref, RandomRecords(), _cfg(), tmp_path / "ref")

    class Crash(Exception):
        pass

    def crash_at_4(record):
        if record["step"] == 4:
            raise Crash

    with pytest.raises(Crash):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(), tmp_path / "run", on_log=crash_at_4)
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 3
    # The crashed process left a record for step 4: resume must drop it, not duplicate it.
    assert [r["step"] for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl"))] == [2, 3, 4]

    # Frozen parts come from construction (a pretrained encoder); scramble the trainable head so
    # its state can only come from the checkpoint.
    resumed = FrozenEncoderMethod()
    with torch.no_grad():
        for p in resumed.head.parameters():
            p.normal_()
    result = fit(resumed, RandomRecords(), _cfg(), tmp_path / "run", resume=True)
    assert result.final == ref_result.final and result.steps == 9
    for k, v in trainable_state_dict(ref).items():
        assert torch.equal(v, trainable_state_dict(resumed)[k]), k
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in rs]
    file_records = list(map(json.loads, open(tmp_path / "run" / "metrics.jsonl")))
    assert strip(file_records) == strip(result.history) == strip(ref_result.history)
    assert [r["step"] for r in file_records] == [2, 3, 4, 6, 8, 9]


def test_resume_without_checkpoint_warns_and_starts_fresh(tmp_path):
    with pytest.warns(RuntimeWarning, match="checkpoint.pt does not exist"):
        result = fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=2), tmp_path,
                     resume=True)
    assert result.steps == 2 and [r["step"] for r in result.history] == [2]


def test_corrupt_checkpoint_raises_data_error_naming_the_file(tmp_path):
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match=r"checkpoint\.pt: cannot read checkpoint"):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(), tmp_path, resume=True)
    torch.save({"step": 1}, tmp_path / "checkpoint.pt")
    with pytest.raises(DataError, match="not a medvlp training checkpoint"):
        load_checkpoint(tmp_path / "checkpoint.pt")


def test_resume_refuses_a_changed_data_order(tmp_path):
    fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=3), tmp_path)
    with pytest.raises(ConfigError, match=r"\['batch_size'\] differ"):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(batch_size=4), tmp_path, resume=True)
    with pytest.warns(RuntimeWarning, match="changed config"):
        fit(FrozenEncoderMethod(), RandomRecords(), _cfg(max_steps=5), tmp_path, resume=True)


def test_rng_state_roundtrip():
    state = capture_rng_state()
    draws = (random.random(), np.random.rand(), torch.rand(3))
    restore_rng_state(state)
    again = (random.random(), np.random.rand(), torch.rand(3))
    assert draws[0] == again[0] and draws[1] == again[1] and torch.equal(draws[2], again[2])
