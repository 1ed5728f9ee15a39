"""SimCLR's NT-Xent (normalised temperature-scaled cross-entropy), the pair-wise baseline of LVM-Med.

For B images with two views, embeddings ``u_k`` (k = 1..2B) are L2-normalised; with
``s_kl = u_kᵀu_l / τ`` and ``p(k)`` the other view of the same image,

    L = (1 / 2B) Σ_k  -log( exp(s_{k,p(k)}) / Σ_{l ≠ k} exp(s_kl) )

(Chen et al. 2020, eq. 1, averaged over both orderings of every positive pair).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """NT-Xent of two (B, D) view embeddings; a scalar."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"nt_xent: z1 {tuple(z1.shape)} and z2 {tuple(z2.shape)} must both be (B, D)")
    if temperature <= 0:
        raise ValueError(f"nt_xent: temperature={temperature}; expected > 0")
    b = z1.shape[0]
    u = F.normalize(torch.cat([z1, z2]), dim=-1)
    sim = u @ u.T / temperature
    sim = sim.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=u.device), float("-inf"))
    positives = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(u.device)
    return F.cross_entropy(sim, positives)
