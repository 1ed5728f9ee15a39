"""ViP's two prompt modules (METHODS.md 2.2, 6.8): learned context (CoP) and symptom merging (MeP).

- :class:`ContextPrompt` (CoOp-style): ``n_ctx`` learnable vectors in the text tower's *token
  embedding* space, written into the context slots of a :class:`~medvlp.models.dual_encoder.TokenLayout`
  (so "X X X X pleural effusion." has its four X embeddings replaced before the frozen transformer).
  One shared context for every text (ViP / CoOp default, ``CSC=False``) or one per class.
- :class:`MergePrompt`: a learnable grouping token per class attends over that class's K symptom
  embeddings ``T_c`` (K×d)::

      q_c = g_c W_q,   k_ck = t_ck W_k,   a_c = softmax_k(q_c k_ck^T / sqrt(d)),   s_c = g_c + a_c T_c

  values are the raw symptom embeddings (no value projection), as in ViP's code. ``merge="mean"``
  and ``merge="max"`` are the ablations (no grouping token: the mean / element-wise max of T_c).

  Not :class:`~medvlp.models.query_pooler.QueryGroupPooler`: that wraps ``nn.MultiheadAttention``
  per group (own Q/K/V and output projections, several heads); MeP shares one bias-free W_q, W_k
  across classes, has a single head, no value or output projection and the residual ``g_c +``.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medvlp.errors import ConfigError
from medvlp.models.dual_encoder import TokenLayout

Merge = Literal["attention", "mean", "max"]


class ContextPrompt(nn.Module):
    """Learnable context vectors ``(1 or C, n_ctx, W)``, init N(0, init_std²), spliced into the
    token embeddings of a fixed set of texts.

    ``text_class[i]`` is the class of text ``i`` (used by class-specific context). The frozen token
    embeddings of the layout are computed once by the caller and passed to :meth:`forward`.
    """

    def __init__(self, layout: TokenLayout, text_class: torch.Tensor | list[int], num_classes: int,
                 width: int, *, class_specific: bool = False, init_std: float = 0.02):
        super().__init__()
        n_ctx = layout.ctx_index.shape[1]
        if n_ctx < 1:
            raise ConfigError("ContextPrompt: the layout has no context slots (n_ctx must be >= 1)")
        tc = torch.as_tensor(text_class, dtype=torch.long)
        if tc.shape != (layout.input_ids.shape[0],):
            raise ConfigError(f"ContextPrompt: {len(tc)} text classes for {layout.input_ids.shape[0]} texts")
        self.register_buffer("ctx_index", layout.ctx_index.clone(), persistent=False)
        self.register_buffer("text_class", tc, persistent=False)
        self.class_specific = class_specific
        self.ctx = nn.Parameter(torch.randn(num_classes if class_specific else 1, n_ctx, width) * init_std)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[1]

    def forward(self, token_embeds: torch.Tensor) -> torch.Tensor:
        """``(N, L, W)`` frozen embeddings -> the same with the context slots overwritten."""
        n, _, w = token_embeds.shape
        rows = self.ctx[self.text_class] if self.class_specific else self.ctx.expand(n, -1, -1)
        index = self.ctx_index.unsqueeze(-1).expand(-1, -1, w)
        # Out-of-place scatter: the result is differentiable w.r.t. ctx, the input stays untouched.
        return token_embeds.scatter(1, index, rows.to(token_embeds.dtype))


class MergePrompt(nn.Module):
    """Merge each class's K symptom embeddings into one class embedding ``s_c`` (see module doc).

    ``normalize_symptoms``: L2-normalise ``T_c`` before merging (ViP's code does not; METHODS.md
    2.7 Q5), a switch for the ablation.
    """

    def __init__(self, num_classes: int, dim: int, merge: Merge = "attention", *,
                 init_std: float = 0.02, normalize_symptoms: bool = False):
        super().__init__()
        if merge not in ("attention", "mean", "max"):
            raise ConfigError(f"MergePrompt: merge={merge!r}; expected 'attention', 'mean' or 'max'")
        self.merge: Merge = merge
        self.num_classes, self.dim = num_classes, dim
        self.normalize_symptoms = normalize_symptoms
        if merge == "attention":
            self.group_tokens = nn.Parameter(torch.randn(num_classes, dim) * init_std)
            self.w_q = nn.Parameter(nn.init.xavier_normal_(torch.empty(dim, dim)))
            self.w_k = nn.Parameter(nn.init.xavier_normal_(torch.empty(dim, dim)))

    def forward(self, symptoms: torch.Tensor, mask: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``symptoms`` ``(C, K, d)``, ``mask`` ``(C, K)`` (True = a real symptom; classes may have
        fewer than K) -> class embeddings ``(C, d)`` and merge weights ``(C, K)`` (attention
        weights; 1/K_c for mean; for max the share of dimensions each symptom supplies)."""
        c, k, d = symptoms.shape
        if (c, d) != (self.num_classes, self.dim):
            raise ValueError(f"MergePrompt: symptoms {tuple(symptoms.shape)}, expected "
                             f"({self.num_classes}, K, {self.dim})")
        if mask is None:
            mask = torch.ones(c, k, dtype=torch.bool, device=symptoms.device)
        t = F.normalize(symptoms, dim=-1) if self.normalize_symptoms else symptoms
        if self.merge == "attention":
            q = self.group_tokens @ self.w_q                       # (C, d)
            keys = t @ self.w_k                                    # (C, K, d)
            scores = torch.einsum("cd,ckd->ck", q, keys) / math.sqrt(d)
            weights = scores.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            return self.group_tokens + torch.einsum("ck,ckd->cd", weights, t), weights
        if self.merge == "mean":
            weights = mask.to(t.dtype) / mask.sum(1, keepdim=True).clamp_min(1).to(t.dtype)
            return torch.einsum("ck,ckd->cd", weights, t), weights
        filled = t.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        merged, arg = filled.max(dim=1)                            # (C, d), (C, d)
        weights = F.one_hot(arg, k).to(t.dtype).mean(dim=1)        # (C, K)
        return merged, weights


def group_by_class(feats: torch.Tensor, text_class: torch.Tensor, num_classes: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Flat per-text features ``(N, d)`` -> padded ``(C, K_max, d)`` and a ``(C, K_max)`` mask,
    texts of each class kept in their given order."""
    counts = torch.bincount(text_class, minlength=num_classes)
    if (counts == 0).any():
        raise ConfigError(f"classes {torch.nonzero(counts == 0).flatten().tolist()} have no text")
    k = int(counts.max())
    out = feats.new_zeros(num_classes, k, feats.shape[1])
    mask = torch.zeros(num_classes, k, dtype=torch.bool, device=feats.device)
    slot = torch.zeros_like(text_class)
    seen = [0] * num_classes
    for i, c in enumerate(text_class.tolist()):
        slot[i] = seen[c]
        seen[c] += 1
    out = out.index_put((text_class, slot), feats)
    mask[text_class, slot] = True
    return out, mask
