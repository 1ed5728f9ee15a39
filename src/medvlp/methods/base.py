"""The method protocol: what the training engine expects from a pretraining/fine-tuning task.

A method is an ``nn.Module`` (subclassing :class:`Method` is optional) with

- ``forward(batch: dict[str, Tensor]) -> dict[str, Tensor]``: must contain ``"loss"`` (a scalar,
  the mean over the batch, which the engine back-propagates); every other scalar in the dict is
  averaged over the log window and over ranks and written to ``metrics.jsonl``. Every rank must
  return the same keys.
- optional ``param_groups(lr, weight_decay) -> list[dict]``: optimizer groups for per-group
  learning rates (e.g. a smaller LR for a pretrained backbone). Each group is a dict with
  ``"params"`` and optional ``"lr"``/``"weight_decay"``/``"name"``; every trainable parameter
  must appear in exactly one group and no frozen one may appear. The default is
  :func:`default_param_groups`.
- optional attribute ``backbone``: the :class:`~medvlp.models.backbone.Backbone` that is saved and
  evaluated after training.
- optional ``extra_state() -> dict[str, Tensor]`` / ``load_extra_state(state)``: state that changes
  during training without requiring grad (an EMA teacher, a feature queue). It goes into
  checkpoints beside the trainable state, so resuming stays exact.

Frozen parts (a pretrained text encoder, say) have ``requires_grad=False``. They are left out of
the optimizer, are not synchronised by DDP and are not written to checkpoints: the *trainable
state* is the parameters requiring grad plus the persistent buffers of the modules that own such a
parameter (e.g. a trainable BatchNorm's running statistics). A frozen module must therefore not
change during training; :meth:`Method.freeze` keeps it in eval mode so its BatchNorm statistics
and dropout stay fixed.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from medvlp.errors import DataError

# Parameter names (last component) that are never weight-decayed: learned tokens and embeddings
# whose scale carries meaning. timm models also list theirs in ``no_weight_decay()``, honoured too.
NO_DECAY_NAMES = frozenset({
    "cls_token", "pos_embed", "dist_token", "reg_token", "mask_token", "query_tokens",
    "position_embedding", "position_embeddings", "logit_scale", "logit_bias", "temperature",
})


class Method(nn.Module):
    """Optional base class for methods: freezing helper and default parameter groups."""

    def __init__(self) -> None:
        super().__init__()
        self._frozen_names: list[str] = []

    def freeze(self, module: nn.Module) -> nn.Module:
        """Set ``requires_grad=False`` on ``module`` and keep it in eval mode from now on."""
        module.requires_grad_(False)
        module.eval()
        for name, m in self.named_modules():
            if m is module:
                self._frozen_names.append(name)
                break
        else:
            raise ValueError("freeze(): the module must be registered as a sub-module first")
        return module

    def train(self, mode: bool = True) -> Method:
        super().train(mode)
        # A frozen module in train mode would update BatchNorm statistics (not checkpointed, so a
        # resumed run would differ) and apply dropout to features that are meant to be fixed.
        modules = dict(self.named_modules())
        for name in self._frozen_names:
            modules[name].eval()
        return self

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        return default_param_groups(self, lr, weight_decay)


def trainable_parameters(method: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """``(name, param)`` for every parameter that requires grad, in registration order."""
    return [(n, p) for n, p in method.named_parameters() if p.requires_grad]


def _no_weight_decay_names(method: nn.Module) -> set[str]:
    names: set[str] = set()
    for prefix, module in method.named_modules():
        fn = getattr(module, "no_weight_decay", None)
        if callable(fn) and not isinstance(fn, nn.Module):
            for n in fn():
                names.add(f"{prefix}.{n}" if prefix else n)
    return names


def default_param_groups(method: nn.Module, lr: float, weight_decay: float) -> list[dict]:
    """Two AdamW-style groups over the trainable parameters.

    No weight decay for biases, norm weights and any other 0-/1-D parameter, for learned tokens
    (:data:`NO_DECAY_NAMES`) and for names a sub-module lists in ``no_weight_decay()``; decay
    ``weight_decay`` for the rest. Empty groups are dropped.
    """
    listed = _no_weight_decay_names(method)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, p in trainable_parameters(method):
        if p.ndim <= 1 or name in listed or name.rsplit(".", 1)[-1] in NO_DECAY_NAMES:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"params": decay, "lr": lr, "weight_decay": weight_decay, "name": "decay"},
        {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": "no_decay"},
    ]
    return [g for g in groups if g["params"]]


def _trainable_modules(method: nn.Module) -> Iterable[tuple[str, nn.Module]]:
    for prefix, module in method.named_modules():
        if any(p.requires_grad for p in module.parameters(recurse=False)):
            yield prefix, module


def trainable_state_dict(method: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters requiring grad + persistent buffers of the modules that own one (detached)."""
    state: dict[str, torch.Tensor] = {n: p.detach() for n, p in trainable_parameters(method)}
    for prefix, module in _trainable_modules(method):
        for bname, buf in module.named_buffers(recurse=False):
            if buf is not None and bname not in module._non_persistent_buffers_set:
                state[f"{prefix}.{bname}" if prefix else bname] = buf.detach()
    return state


def frozen_state_names(method: nn.Module) -> list[str]:
    """Names of parameters and buffers outside the trainable state (what DDP may ignore)."""
    keep = trainable_state_dict(method).keys()
    names = [n for n, _ in method.named_parameters()] + [n for n, _ in method.named_buffers()]
    return [n for n in names if n not in keep]


def load_trainable_state_dict(method: nn.Module, state: dict[str, torch.Tensor],
                              source: str | None = None) -> None:
    """Copy ``state`` (from :func:`trainable_state_dict`) into ``method`` in place.

    The keys must match the method's trainable state exactly, and shapes must agree; otherwise a
    :class:`~medvlp.errors.DataError` naming ``source`` (the checkpoint file) lists the mismatch.
    """
    target = trainable_state_dict(method)
    missing = sorted(set(target) - set(state))
    unexpected = sorted(set(state) - set(target))
    if missing or unexpected:
        raise DataError(source, f"trainable state does not match the method: missing keys "
                        f"{missing[:8]}, unexpected keys {unexpected[:8]}",
                        "a checkpoint written for the same method with the same frozen parts")
    for name, dst in target.items():
        src = state[name]
        if src.shape != dst.shape:
            raise DataError(source, f"{name} has shape {tuple(src.shape)}",
                            f"shape {tuple(dst.shape)}", record=name)
    with torch.no_grad():
        for name, dst in target.items():
            dst.copy_(state[name])
