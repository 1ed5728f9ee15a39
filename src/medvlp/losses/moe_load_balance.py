"""Switch-Transformer load-balancing loss for a mixture of experts (Fedus et al. 2021, eq. 4).

    L_aux = E * sum_e f_e * P_e

``f_e`` is the fraction of routing slots dispatched to expert ``e`` (each token fills ``k`` slots
under top-k routing, so ``sum_e f_e = 1``), ``P_e`` the mean router probability of ``e`` over the
tokens. ``f`` is a count (no gradient); the gradient flows through ``P``. A perfectly uniform
router gives ``L_aux = 1``; collapsing onto one expert gives ``E``.
"""
from __future__ import annotations

import torch


def moe_load_balance(router_probs: torch.Tensor, expert_index: torch.Tensor,
                     token_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Args:
        router_probs: ``(T, E)`` softmax probabilities over ``E`` experts per token.
        expert_index: ``(T, k)`` int64 chosen experts per token (top-k), or ``(T,)`` for top-1.
        token_mask: optional ``(T,)`` bool/float, 1 for tokens that count (padding excluded).
    Returns: scalar ``E * sum_e f_e * P_e``.
    """
    if router_probs.ndim != 2:
        raise ValueError(f"router_probs has shape {tuple(router_probs.shape)}: expected (T, E)")
    t, e = router_probs.shape
    idx = expert_index.unsqueeze(1) if expert_index.ndim == 1 else expert_index
    if idx.shape[0] != t:
        raise ValueError(f"expert_index has {idx.shape[0]} rows for {t} tokens")
    w = torch.ones(t, device=router_probs.device) if token_mask is None else token_mask.float()
    n = w.sum().clamp_min(1.0)
    dispatch = torch.zeros(t, e, device=router_probs.device).scatter_(1, idx, 1.0)
    f = (dispatch * w[:, None]).sum(0) / (n * idx.shape[1])
    p = (router_probs * w[:, None]).sum(0) / n
    return e * (f.detach() * p).sum()
