"""TGH-MoE: a text-guided hierarchical mixture of experts around a ViT block's FFN.

RECONSTRUCTION (METHODS.md §3.2; arXiv 2604.10233 has no public code and only its abstract is
known). Every choice below is a switch:

    y = FFN(x) + sum_g pi_g * sum_{e in topk_g(x)} r_{g,e}(x) * Expert_{g,e}(x)
    pi   = softmax(W_t p / tau)              level 1: the prompt embedding p picks a task group
    r_g  = softmax(W_r^g [x ; p])            level 2: tokens pick top-k experts inside group g

- ``expert="ffn"``: a small FFN ``D -> expert_hidden -> D`` (output layer zero-initialised);
  ``expert="lora"``: a rank-``lora_rank`` LoRA on both FFN linears, the expert output being the
  *change* it makes, ``FFN_lora(x) - FFN(x)`` (B matrices zero-initialised). Either way a fresh
  layer returns exactly ``FFN(x)``, so the 2D weights are reused unchanged.
- ``renorm_topk``: renormalise the top-k gates to sum to 1 (default) or keep the raw softmax
  gates (Switch-style).
- ``mode``: ``"shared"`` (stage 1, task-shared: one shared expert, routing off:
  ``y = FFN(x) + Expert_shared(x)``, which equals tied experts under renormalised gates) or
  ``"routed"`` (stage 2). :meth:`untie_from_shared` copies the shared expert into every expert.
- ``aux_loss`` after a forward: the Switch load-balancing loss of level 2, averaged over groups
  (tokens weighted by their group gate is not done: every group's router sees every token).
"""
from __future__ import annotations

import copy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from medvlp.errors import ConfigError
from medvlp.losses.moe_load_balance import moe_load_balance


class FFNExpert(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, base: nn.Module) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class LoRAExpert(nn.Module):
    """Low-rank updates of the base FFN's fc1 and fc2; returns ``FFN_lora(x) - FFN(x)``."""

    def __init__(self, dim: int, hidden: int, rank: int, alpha: float):
        super().__init__()
        self.a1, self.b1 = nn.Parameter(torch.randn(rank, dim) / dim ** 0.5), nn.Parameter(torch.zeros(hidden, rank))
        self.a2, self.b2 = nn.Parameter(torch.randn(rank, hidden) / hidden ** 0.5), nn.Parameter(torch.zeros(dim, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor, base: nn.Module) -> torch.Tensor:
        h0 = base.fc1(x)
        h = h0 + self.scale * (x @ self.a1.t()) @ self.b1.t()
        a0, a = base.act(h0), base.act(h)
        a0, a = base.norm(a0), base.norm(a)
        # W2 (act(h) - act(h0)) + s B2 A2 act(h): no bias, it cancels in the difference
        return (a - a0) @ base.fc2.weight.t() + self.scale * (a @ self.a2.t()) @ self.b2.t()


class TGHMoE(nn.Module):
    """Wraps ``base_ffn`` (a timm ``Mlp`` with fc1/act/norm/fc2) with G groups x E experts."""

    def __init__(self, base_ffn: nn.Module, dim: int, prompt_dim: int, *, num_groups: int = 2,
                 experts_per_group: int = 2, top_k: int = 1, expert: Literal["ffn", "lora"] = "lora",
                 expert_hidden: int = 64, lora_rank: int = 4, lora_alpha: float = 8.0,
                 task_temperature: float = 1.0, renorm_topk: bool = True,
                 mode: Literal["shared", "routed"] = "routed"):
        super().__init__()
        if not 1 <= top_k <= experts_per_group:
            raise ConfigError(f"TGH-MoE: top_k={top_k}; expected 1..experts_per_group={experts_per_group}")
        if num_groups < 1 or experts_per_group < 1:
            raise ConfigError("TGH-MoE: num_groups and experts_per_group must be >= 1")
        if expert not in ("ffn", "lora"):
            raise ConfigError(f"TGH-MoE: expert={expert!r}; expected 'ffn' or 'lora'")
        self.base = base_ffn
        hidden = base_ffn.fc1.out_features

        def make() -> nn.Module:
            return FFNExpert(dim, expert_hidden) if expert == "ffn" else LoRAExpert(dim, hidden, lora_rank, lora_alpha)

        self.G, self.E, self.k = num_groups, experts_per_group, top_k
        self.shared = make()
        self.experts = nn.ModuleList(make() for _ in range(num_groups * experts_per_group))
        self.task_router = nn.Linear(prompt_dim, num_groups)
        self.token_router = nn.Linear(dim + prompt_dim, num_groups * experts_per_group)
        for lin in (self.task_router, self.token_router):
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)
        self.tau, self.renorm_topk = task_temperature, renorm_topk
        self.set_mode(mode)
        self.aux_loss = torch.zeros(())
        self.last_group_probs: torch.Tensor | None = None

    def set_mode(self, mode: str) -> None:
        if mode not in ("shared", "routed"):
            raise ConfigError(f"TGH-MoE: mode={mode!r}; expected 'shared' or 'routed'")
        # requires_grad is left alone: parameters unused in a mode get no gradient (AdamW skips
        # them), and the trainable state stays the same across stages, so checkpoints resume.
        self.mode = mode

    @torch.no_grad()
    def untie_from_shared(self) -> None:
        """Stage 2 start: every expert becomes a copy of the stage-1 shared expert."""
        for i in range(len(self.experts)):
            self.experts[i].load_state_dict(copy.deepcopy(self.shared.state_dict()))

    def group_probs(self, prompt: torch.Tensor) -> torch.Tensor:
        """Level-1 gates ``(B, G)`` from prompt embeddings ``(B, P)``."""
        return torch.softmax(self.task_router(prompt) / self.tau, dim=-1)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """``x`` (B, N, D) tokens, ``prompt`` (B, P) -> (B, N, D)."""
        y = self.base(x)
        if self.mode == "shared":
            self.aux_loss = x.new_zeros(())
            return y + self.shared(x, self.base)
        b, n, d = x.shape
        pi = self.group_probs(prompt)                                   # (B, G)
        self.last_group_probs = pi  # kept with grad: the method may supervise the task router
        p_tok = prompt[:, None, :].expand(b, n, prompt.shape[-1])
        logits = self.token_router(torch.cat([x, p_tok], -1)).view(b, n, self.G, self.E)
        r = torch.softmax(logits, dim=-1)                               # (B, N, G, E)
        top_v, top_i = r.topk(self.k, dim=-1)
        if self.renorm_topk:
            top_v = top_v / top_v.sum(-1, keepdim=True)
        gates = torch.zeros_like(r).scatter(-1, top_i, top_v) * pi[:, None, :, None]
        gates = gates.flatten(2)                                        # (B, N, G*E)
        # Dispatch: each expert runs only on the tokens routed to it (top-k per group).
        out = y.reshape(b * n, d).clone()
        xf, gf = x.reshape(b * n, d), gates.reshape(b * n, -1)
        for e, expert in enumerate(self.experts):
            sel = torch.nonzero(gf[:, e] != 0, as_tuple=True)[0]
            if len(sel):
                out = out.index_add(0, sel, gf[sel, e:e + 1] * expert(xf[sel], self.base))
        out = out.reshape(b, n, d)
        aux = [moe_load_balance(r[:, :, gi].reshape(-1, self.E), top_i[:, :, gi].reshape(-1, self.k))
               for gi in range(self.G)]
        self.aux_loss = torch.stack(aux).mean()
        return out
