"""The visual prefix a frozen causal LM reads: ViT tokens -> LM input embeddings (METHODS.md 1.2).

Two variants of one module, chosen by ``spd``:

- ``spd=True`` (VIVID-Med, "A+UMS+SPD"): a :class:`QueryGroupPooler` (G groups x M queries in ViT
  space) gives G*M pooled tokens; the *same* MLP projects them and every ViT token::

      prefix = [ MLP(SPD(X)) ; MLP(X) ]          # (B, G*M + N, H)

  The Q-Former proxy ablation is ``groups=1, queries_per_group=8`` with lambda_ortho = 0.
- ``spd=False`` ("A+UMS", the authors' ``projector.py``): ``num_learned`` image-independent
  learnable prefix tokens (already in LM space) followed by the projected ViT tokens.

The MLP is ``Linear(D->H) -> GELU -> Dropout -> Linear(H->H) -> Dropout -> LayerNorm(H)`` with
Xavier-uniform weights and zero biases, as in the reference projector.
"""
from __future__ import annotations

import torch
from torch import nn

from medvlp.models.query_pooler import QueryGroupPooler


class PrefixMLP(nn.Sequential):
    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.1):
        super().__init__(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Dropout(dropout),
                         nn.Linear(out_dim, out_dim), nn.Dropout(dropout), nn.LayerNorm(out_dim))
        for m in self:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)


class VisualPrefix(nn.Module):
    """``forward(vit_tokens (B, N, D)) -> (prefix (B, P, H), attn (B, G, M, N) or None)``."""

    def __init__(self, vit_dim: int, lm_dim: int, *, spd: bool = True, groups: int = 4,
                 queries_per_group: int = 2, num_heads: int = 4, dropout: float = 0.1,
                 num_learned: int = 4):
        super().__init__()
        self.config = {"vit_dim": vit_dim, "lm_dim": lm_dim, "spd": spd, "groups": groups,
                       "queries_per_group": queries_per_group, "num_heads": num_heads,
                       "dropout": dropout, "num_learned": num_learned}
        self.spd = spd
        self.mlp = PrefixMLP(vit_dim, lm_dim, dropout)
        if spd:
            self.pooler = QueryGroupPooler(vit_dim, groups, queries_per_group, num_heads, dropout)
            self.num_extra = self.pooler.num_tokens
        else:
            # In LM space already: the reference projector adds them after the MLP.
            self.query_tokens = nn.Parameter(torch.randn(num_learned, lm_dim) * 0.02)
            self.num_extra = num_learned

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        projected = self.mlp(tokens)
        if self.spd:
            pooled, attn = self.pooler(tokens)
            return torch.cat([self.mlp(pooled), projected], dim=1), attn
        learned = self.query_tokens.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        return torch.cat([learned.to(projected.dtype), projected], dim=1), None
