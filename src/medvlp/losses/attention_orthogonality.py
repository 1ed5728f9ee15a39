"""Attention-map orthogonality between query groups (VIVID-Med SPD, METHODS.md 1.5).

For attention maps ``A`` of shape (B, G, M, N) (head-averaged, non-negative)::

    a_g^b   = (1/M) sum_m A[b, g, m, :]                      # (N,) per group and image
    L_ortho = mean_{g<h} mean_b | cos(a_g^b, a_h^b) |

Weights are non-negative, so the loss is minimised when groups attend to disjoint token sets.
With a single group there are no pairs and the loss is 0 (the Q-Former proxy, lambda = 0).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def attention_orthogonality(attn: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean absolute cosine similarity over group pairs; ``attn`` is (B, G, M, N) or (B, G, N)."""
    if attn.ndim == 4:
        attn = attn.mean(dim=2)
    if attn.ndim != 3:
        raise ValueError(f"attention_orthogonality: attn of shape {tuple(attn.shape)}, expected "
                         f"(B, G, M, N) or (B, G, N)")
    g = attn.shape[1]
    if g < 2:
        return attn.sum() * 0.0
    a = F.normalize(attn, dim=-1, eps=eps)
    cos = torch.einsum("bgn,bhn->bgh", a, a).abs()          # (B, G, G)
    iu = torch.triu_indices(g, g, offset=1, device=attn.device)
    return cos[:, iu[0], iu[1]].mean()


def attention_entropy(attn: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-group entropy (nats) of the query-averaged, renormalised map, averaged over the batch:
    (G,). Near 0 means a group collapsed onto one token (the degenerate orthogonality that
    METHODS.md 1.9.6 warns about); log(N) is uniform attention."""
    if attn.ndim == 4:
        attn = attn.mean(dim=2)
    p = attn / attn.sum(dim=-1, keepdim=True).clamp_min(eps)
    return -(p * (p + eps).log()).sum(-1).mean(0)
