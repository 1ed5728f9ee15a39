"""Token-weighted next-token cross-entropy (VIVID-Med answerability masking, METHODS.md 1.4).

With logits (B, L, V) of a causal LM over a sequence, labels (B, L) (-100 = not supervised) and
per-position weights w (B, L), the prediction of position t+1 comes from position t::

    CE_t   = -log softmax(logits[b, t])[labels[b, t+1]]
    L_tok  = sum_{b,t: label != -100} w[b, t+1] * CE_t  /  |{(b, t): labels[b, t+1] != -100}|

The denominator counts supervised tokens, not sum(w), as in the reference trainer: masking a
token (w = 0) removes its term without re-scaling the others. With ``shift=False`` the logits
are taken as already aligned with labels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def token_weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None,
                      *, shift: bool = True) -> torch.Tensor:
    if logits.shape[:2] != labels.shape:
        raise ValueError(f"token_weighted_ce: logits {tuple(logits.shape)} and labels "
                         f"{tuple(labels.shape)} disagree on (B, L)")
    if weights is not None and weights.shape != labels.shape:
        raise ValueError(f"token_weighted_ce: weights {tuple(weights.shape)} != labels "
                         f"{tuple(labels.shape)}")
    if shift:
        logits, labels = logits[:, :-1], labels[:, 1:]
        weights = None if weights is None else weights[:, 1:]
    mask = labels != IGNORE_INDEX
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(),
                         labels.reshape(-1).clamp_min(0), reduction="none").view_as(labels)
    w = mask.to(ce.dtype) if weights is None else weights.to(ce.dtype) * mask
    n = mask.sum()
    return (w * ce).sum() / n.clamp_min(1)
