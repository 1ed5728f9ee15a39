"""Optimizer and learning-rate schedule.

Schedule, per optimizer step ``t`` (``W`` warmup steps, ``T`` total steps, ``r`` = min_lr_ratio),
as a factor on each group's own LR so per-group LRs keep their ratios:

.. math::

    f(t) = \\begin{cases}
        0.1 + 0.9\\, t / W & t < W \\\\
        r + (1 - r)\\, \\tfrac12 \\big(1 + \\cos(\\pi\\, \\tfrac{t - W}{\\max(1, T - W)})\\big) & t \\ge W
    \\end{cases}

so step 0 runs at 0.1·lr, step ``W`` at lr and the LR reaches r·lr at ``t = T``.
"""
from __future__ import annotations

import math
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from medvlp.errors import ConfigError
from medvlp.methods.base import default_param_groups, trainable_parameters

if TYPE_CHECKING:
    from medvlp.train.engine import TrainConfig


def warmup_cosine_factor(step: int, *, warmup_steps: int, total_steps: int,
                         min_lr_ratio: float) -> float:
    """LR multiplier at optimizer step ``step`` (see module docstring)."""
    if step < warmup_steps:
        return 0.1 + 0.9 * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups_for(method: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """The method's ``param_groups`` (or the default), checked to cover each trainable param once."""
    fn = getattr(method, "param_groups", None)
    groups = fn(lr, weight_decay) if callable(fn) else default_param_groups(method, lr, weight_decay)
    trainable = {id(p): n for n, p in trainable_parameters(method)}
    seen: dict[int, str] = {}
    for i, g in enumerate(groups):
        g["params"] = list(g["params"])
        g.setdefault("lr", lr)
        g.setdefault("weight_decay", weight_decay)
        g.setdefault("name", f"group{i}")
        for p in g["params"]:
            if not p.requires_grad:
                raise ConfigError(f"param_groups(): group {g['name']!r} holds a frozen parameter "
                                  "(requires_grad=False); frozen parameters stay out of the optimizer")
            if id(p) in seen:
                raise ConfigError(f"param_groups(): {trainable.get(id(p), '?')} is in groups "
                                  f"{seen[id(p)]!r} and {g['name']!r}")
            seen[id(p)] = g["name"]
    missing = [n for i, n in trainable.items() if i not in seen]
    if missing:
        raise ConfigError(f"param_groups(): trainable parameters in no group: {missing[:8]}")
    return groups


def build_optimizer(method: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW or SGD (with momentum) over the trainable parameters, per-group LR / weight decay."""
    groups = param_groups_for(method, cfg.lr, cfg.weight_decay)
    if not groups:
        raise ConfigError("the method has no trainable parameters (all have requires_grad=False)")
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    raise ConfigError(f"optimizer={cfg.optimizer!r}: expected 'adamw' or 'sgd'")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig,
                    total_steps: int) -> LambdaLR:
    """Linear warmup from 0.1·lr then cosine to ``min_lr_ratio``·lr; call ``.step()`` per optimizer step."""
    if total_steps < 1:
        raise ConfigError(f"total_steps={total_steps}: expected at least one optimizer step")
    # A partial (not a closure) so LambdaLR's state_dict stays plain data for weights_only loads.
    factor = partial(warmup_cosine_factor, warmup_steps=cfg.warmup_steps, total_steps=total_steps,
                     min_lr_ratio=cfg.min_lr_ratio)
    return LambdaLR(optimizer, factor)
