"""Query-group cross-attention pooler: G groups x M learnable queries over a token sequence.

One implementation serves VIVID-Med's SPD (G=4, M=2), its Q-Former proxy (G=1, M=8) and
ViP-style class queries (G=C, M=1, value = keys) - METHODS.md 1.2 and 6.5.

For group g with queries ``Q_g`` (M, D) and tokens ``X`` (B, N, D)::

    out_g, A_g = MultiheadAttention_g(query=Q_g, key=X, value=V)   # V = X unless given
    pooled = concat_g out_g                                        # (B, G*M, D)
    attn   = stack_g A_g                                           # (B, G, M, N), head-averaged

Each group has its own attention module (own projections), as in the authors' SPD, so groups can
specialise; the orthogonality loss (``losses.attention_orthogonality``) pushes them apart.
"""
from __future__ import annotations

import torch
from torch import nn

from medvlp.errors import ConfigError


class QueryGroupPooler(nn.Module):
    """``forward(tokens, value=None) -> (pooled (B, G*M, D), attn (B, G, M, N))``.

    Queries are initialised N(0, init_std^2) (0.02 in the reference code). ``dropout`` is the
    attention dropout of ``nn.MultiheadAttention`` (0.1 in the reference code); the returned maps
    are PyTorch's head-averaged weights.
    """

    def __init__(self, dim: int, groups: int = 4, queries_per_group: int = 2, num_heads: int = 4,
                 dropout: float = 0.1, init_std: float = 0.02):
        super().__init__()
        if groups < 1 or queries_per_group < 1:
            raise ConfigError(f"QueryGroupPooler: groups={groups}, queries_per_group="
                              f"{queries_per_group}; both must be >= 1")
        if dim % num_heads:
            raise ConfigError(f"QueryGroupPooler: dim={dim} is not divisible by num_heads={num_heads}")
        self.dim, self.groups, self.queries_per_group = dim, groups, queries_per_group
        self.query_tokens = nn.Parameter(torch.randn(groups, queries_per_group, dim) * init_std)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, num_heads, dropout=dropout, batch_first=True)
                                  for _ in range(groups))

    @property
    def num_tokens(self) -> int:
        return self.groups * self.queries_per_group

    def forward(self, tokens: torch.Tensor, value: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if tokens.ndim != 3 or tokens.shape[-1] != self.dim:
            raise ValueError(f"QueryGroupPooler: tokens of shape {tuple(tokens.shape)}, expected "
                             f"(B, N, {self.dim})")
        b = tokens.shape[0]
        value = tokens if value is None else value
        outs, maps = [], []
        for g, mha in enumerate(self.attn):
            q = self.query_tokens[g].unsqueeze(0).expand(b, -1, -1)
            out, weights = mha(q, tokens, value, key_padding_mask=key_padding_mask,
                               need_weights=True, average_attn_weights=True)
            outs.append(out)
            maps.append(weights)
        return torch.cat(outs, dim=1), torch.stack(maps, dim=1)
