from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from medvlp.errors import ConfigError
from medvlp.methods.base import default_param_groups
from medvlp.train import TrainConfig, build_optimizer, build_scheduler
from medvlp.train.optim import warmup_cosine_factor

from conftest import FrozenEncoderMethod


def _lrs(cfg: TrainConfig, total: int, method: nn.Module | None = None) -> list[list[float]]:
    opt = build_optimizer(method or nn.Linear(3, 2), cfg)
    sched = build_scheduler(opt, cfg, total)
    lrs = []
    for _ in range(total + 1):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    return lrs


def test_warmup_then_cosine_values():
    cfg = TrainConfig(lr=0.1, warmup_steps=4, min_lr_ratio=0.2)
    lrs = [g[0] for g in _lrs(cfg, total=20)]
    assert lrs[0] == pytest.approx(0.01)                       # warmup start: 0.1 * lr
    assert lrs[2] == pytest.approx(0.1 * (0.1 + 0.9 * 2 / 4))  # linear in between
    assert lrs[4] == pytest.approx(0.1)                        # warmup end: lr
    mid = 4 + 8  # half-way through the cosine: (1 + r) / 2
    assert lrs[mid] == pytest.approx(0.1 * (0.2 + 0.8 * 0.5 * (1 + math.cos(math.pi * 0.5))))
    assert lrs[20] == pytest.approx(0.02)                      # end: min_lr_ratio * lr
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))


def test_no_warmup_starts_at_lr_and_groups_keep_their_ratio():
    class TwoLR(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)

        def param_groups(self, lr, weight_decay):
            return [{"params": self.a.parameters(), "lr": lr * 0.1, "name": "a"},
                    {"params": self.b.parameters(), "lr": lr, "name": "b"}]

    lrs = _lrs(TrainConfig(lr=1.0, warmup_steps=0), total=10, method=TwoLR())
    assert lrs[0] == pytest.approx([0.1, 1.0])
    for a, b in lrs:
        assert a == pytest.approx(0.1 * b)
    assert lrs[10] == pytest.approx([0.0, 0.0])
    assert warmup_cosine_factor(5, warmup_steps=0, total_steps=10, min_lr_ratio=0) == pytest.approx(0.5)


def test_default_groups_exclude_biases_norms_tokens_and_frozen():
    method = FrozenEncoderMethod()
    method.cls_token = nn.Parameter(torch.zeros(1, 1, 16))
    method.proj = nn.Linear(16, 16)
    groups = {g["name"]: g for g in default_param_groups(method, 1e-3, 0.05)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["decay"] == {id(method.head[0].weight), id(method.head[4].weight),
                            id(method.proj.weight)}
    assert id(method.cls_token) in ids["no_decay"] and id(method.head[1].weight) in ids["no_decay"]
    assert groups["no_decay"]["weight_decay"] == 0.0
    frozen = {id(p) for p in method.encoder.parameters()}
    assert not frozen & (ids["decay"] | ids["no_decay"])


def test_timm_no_weight_decay_names_are_honoured():
    import timm

    vit = timm.create_model("vit_tiny_patch16_224", img_size=28, patch_size=4, in_chans=1,
                            num_classes=0, depth=1)
    no_decay = {id(p) for g in default_param_groups(vit, 1e-3, 0.05) if g["weight_decay"] == 0
                for p in g["params"]}
    assert id(vit.pos_embed) in no_decay and id(vit.cls_token) in no_decay
    assert id(vit.patch_embed.proj.weight) not in no_decay


def test_bad_param_groups_raise():
    class Bad(nn.Module):
        def __init__(self, groups):
            super().__init__()
            self.a, self.b = nn.Linear(2, 2), nn.Linear(2, 2)
            self.b.requires_grad_(False)
            self._groups = groups

        def param_groups(self, lr, weight_decay):
            return self._groups(self)

    with pytest.raises(ConfigError, match="frozen"):
        build_optimizer(Bad(lambda m: [{"params": list(m.parameters())}]), TrainConfig())
    with pytest.raises(ConfigError, match=r"in no group: \['a.bias'\]"):
        build_optimizer(Bad(lambda m: [{"params": [m.a.weight]}]), TrainConfig())
    with pytest.raises(ConfigError, match="a.weight is in groups"):
        build_optimizer(Bad(lambda m: [{"params": [m.a.weight, m.a.bias]},
                                       {"params": [m.a.weight]}]), TrainConfig())


def test_sgd_uses_momentum():
    opt = build_optimizer(nn.Linear(2, 2), TrainConfig(optimizer="sgd", momentum=0.5, lr=0.1))
    assert isinstance(opt, torch.optim.SGD) and opt.param_groups[0]["momentum"] == 0.5
