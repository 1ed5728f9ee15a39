"""Supervised training of a backbone with a linear head: the baseline every method is compared to."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medvlp.losses.masked_bce import masked_bce_with_logits
from medvlp.methods.base import Method
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models.backbone import Backbone

Task = Literal["binary", "multiclass", "multilabel"]


class SupervisedMethod(Method):
    """Backbone + ``nn.Linear(feature_dim, num_outputs)`` trained on labels.

    Losses (``batch["label"]`` as in :class:`~medvlp.data.imageset.ImageSet`):

    - ``binary``: one logit, BCE-with-logits against the 0/1 label; ``num_outputs`` must be 1.
    - ``multiclass``: cross-entropy over ``num_outputs >= 2`` classes, integer labels ``(B,)``.
    - ``multilabel``: :func:`~medvlp.losses.masked_bce_with_logits` over ``(B, C)`` float labels
      with NaN for missing.

    ``forward`` returns ``{"loss", "acc"}`` (``acc`` for binary/multiclass only).
    """

    def __init__(self, backbone: Backbone, num_outputs: int, task: Task):
        super().__init__()
        if task not in ("binary", "multiclass", "multilabel"):
            raise ValueError(f"task={task!r}: expected 'binary', 'multiclass' or 'multilabel'")
        if task == "binary" and num_outputs != 1:
            raise ValueError(f"task='binary' uses one logit: num_outputs={num_outputs}, expected 1")
        if task == "multiclass" and num_outputs < 2:
            raise ValueError(f"task='multiclass': num_outputs={num_outputs}, expected >= 2")
        if num_outputs < 1:
            raise ValueError(f"num_outputs={num_outputs}: expected >= 1")
        self.backbone = backbone
        self.task: Task = task
        self.num_outputs = num_outputs
        self.head = nn.Linear(backbone.feature_dim, num_outputs)

    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_outputs)``."""
        return self.head(self.backbone.pooled(images))

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for key in ("image", "label"):
            if key not in batch:
                raise KeyError(f"SupervisedMethod: batch has no {key!r} (keys: {sorted(batch)})")
        logits = self.predict(batch["image"])
        labels = batch["label"]
        if self.task == "multilabel":
            if labels.shape != logits.shape:
                raise ValueError(f"batch['label'] has shape {tuple(labels.shape)}: expected "
                                 f"{tuple(logits.shape)} for {self.num_outputs} labels")
            return {"loss": masked_bce_with_logits(logits, labels.to(logits.dtype))}
        labels = _as_class_index(labels, len(logits))
        if self.task == "binary":
            logit = logits[:, 0]
            loss = F.binary_cross_entropy_with_logits(logit, labels.to(logit.dtype))
            pred = (logit > 0).long()
        else:
            loss = F.cross_entropy(logits, labels)
            pred = logits.argmax(dim=1)
        return {"loss": loss, "acc": (pred == labels).float().mean()}


def build(ctx: BuildContext) -> MethodBuild:
    """``--method supervised``: a linear head on the pretraining set's own labels."""
    from medvlp.data.torch_dataset import TorchImageDataset

    ds = ctx.train_set
    return MethodBuild(SupervisedMethod(ctx.backbone, ds.num_outputs, ds.task, **ctx.options),
                       TorchImageDataset(ds, ctx.transform))


def _as_class_index(labels: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``(B,)`` or ``(B, 1)`` integer labels -> ``(B,)`` int64."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.shape != (batch_size,):
        raise ValueError(f"batch['label'] has shape {tuple(labels.shape)}: expected ({batch_size},)")
    if labels.is_floating_point():
        if torch.isnan(labels).any() or (labels != labels.round()).any():
            raise ValueError("batch['label'] holds non-integer values: expected class indices")
    return labels.long()
