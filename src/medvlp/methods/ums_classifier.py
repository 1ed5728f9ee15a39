"""The no-LM control (METHODS.md 1.7/1.8): ViT + one 4-way head per UMS field.

Each field f of the vocabulary gets ``Linear(D -> 4)`` over the pooled ViT feature, classes
``(null, absent, uncertain, present)``; the loss is the mean cross-entropy over fields::

    L = (1/F) sum_f CE(head_f(pooled), state_f)

``null`` is a class, as in the authors' classifier (they predicted unanswerability too); with
``ignore_null=True`` null slots are left out of the loss instead. It answers METHODS.md 1.9.5:
how much of VIVID's gain comes from the structured labels alone, without any LM.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from medvlp.config import StrictConfig
from medvlp.methods.base import Method
from medvlp.methods.registry import BuildContext, MethodBuild

STATE_CLASSES = (None, "absent", "uncertain", "present")


class UMSClassifierOptions(StrictConfig):
    ignore_null: bool = False
    vocabulary: list[str] | None = Field(None, description="fields to predict; default: the records' own")


class UMSClassifierMethod(Method):
    def __init__(self, backbone: nn.Module, fields: list[str], ignore_null: bool = False):
        super().__init__()
        self.backbone, self.fields, self.ignore_null = backbone, list(fields), ignore_null
        self.heads = nn.Linear(backbone.feature_dim, 4 * len(fields))  # F heads in one matmul

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.heads(self.backbone.pooled(images)).view(len(images), len(self.fields), 4)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        logits, target = self.logits(batch["image"]), batch["states"]
        if self.ignore_null:
            target = target.masked_fill(target == 0, -100)
        loss = F.cross_entropy(logits.reshape(-1, 4), target.reshape(-1), ignore_index=-100)
        acc = (logits.argmax(-1) == target).float()[target != -100].mean()
        return {"loss": loss, "acc": acc}


class _StatesDataset(torch.utils.data.Dataset):
    def __init__(self, imageset, states: torch.Tensor, transform):
        self.imageset, self.states, self.transform = imageset, states, transform

    def __len__(self) -> int:
        return len(self.states)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.transform(self.imageset.images[i]), "states": self.states[i], "index": i}


def state_matrix(records, fields: list[str]) -> torch.Tensor:
    """(N, F) class indices into :data:`STATE_CLASSES`; a field a record lacks is null."""
    idx = {s: i for i, s in enumerate(STATE_CLASSES)}
    return torch.tensor([[idx[r.findings[f].state if f in r.findings else None] for f in fields]
                         for r in records], dtype=torch.long)


def build(ctx: BuildContext) -> MethodBuild:
    """``--method ums_classifier``: same UMS records as ``vivid``, no language model."""
    from medvlp.methods.vivid_targets import records_for_imageset

    opts = UMSClassifierOptions.model_validate(ctx.options)
    records = records_for_imageset(ctx.train_set)
    fields = opts.vocabulary or list(records[0].findings)
    method = UMSClassifierMethod(ctx.backbone, fields, opts.ignore_null)
    return MethodBuild(method, _StatesDataset(ctx.train_set, state_matrix(records, fields), ctx.transform),
                       parts_used={"targets": "UMS states compiled from labels (no language model)"},
                       metadata={"ums_classifier": {"fields": fields, "ignore_null": opts.ignore_null}})
