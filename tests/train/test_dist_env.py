from __future__ import annotations

import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.train.dist import all_reduce_mean, init_distributed, is_main, world_from_env

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
       "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for k in ENV:
        monkeypatch.delenv(k, raising=False)
    return monkeypatch


def test_single_process_without_env(clean_env):
    assert world_from_env() == (0, 1, 0)
    info = init_distributed("cpu")
    assert (info.rank, info.world_size, info.backend, info.device) == (0, 1, None, torch.device("cpu"))
    assert is_main() and torch.equal(all_reduce_mean(torch.tensor([1.0, 3.0])), torch.tensor([1.0, 3.0]))


def test_torchrun_env(clean_env):
    for k, v in {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}.items():
        clean_env.setenv(k, v)
    assert world_from_env() == (3, 4, 1)


def test_slurm_env_needs_master_address(clean_env):
    for k, v in {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_LOCALID": "1"}.items():
        clean_env.setenv(k, v)
    with pytest.raises(ConfigError, match="set MASTER_ADDR and MASTER_PORT"):
        world_from_env()
    clean_env.setenv("MASTER_ADDR", "node1")
    clean_env.setenv("MASTER_PORT", "29500")
    assert world_from_env() == (1, 2, 1)


def test_bad_rank_env(clean_env):
    clean_env.setenv("RANK", "2")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(ConfigError, match="rank 2 is not in a world of size 2"):
        world_from_env()
    clean_env.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        world_from_env()
