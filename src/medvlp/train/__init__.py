"""The training engine: one loop for every method, one process or ``torchrun`` (DDP).

    from medvlp.train import TrainConfig, fit
    result = fit(method, dataset, TrainConfig(max_steps=1000, lr=3e-4), "runs/x")
"""
from medvlp.train.checkpoint import load_checkpoint, save_checkpoint
from medvlp.train.dist import DistInfo, init_distributed
from medvlp.train.engine import TrainConfig, TrainResult, fit
from medvlp.train.optim import build_optimizer, build_scheduler
from medvlp.train.sampler import ShardedEpochSampler

__all__ = [
    "DistInfo",
    "ShardedEpochSampler",
    "TrainConfig",
    "TrainResult",
    "build_optimizer",
    "build_scheduler",
    "fit",
    "init_distributed",
    "load_checkpoint",
    "save_checkpoint",
]
