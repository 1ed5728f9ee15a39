"""LVM-Med's graph-matching loss: Hamming distance between the solver's matching and the identity.

For one pair of N-node graphs (view s and view t of the same N images) with vertex affinities
``c^v`` (N, N) and edge affinities ``c^e`` (|E^s|, |E^t|):

    v̂ = MAP(c^v, c^e)                  (QAP, or the LAP on c^v alone for the first-order ablation)
    L = (1/N) · Σ_ia [ v̂_ia (1 - v*_ia) + v*_ia (1 - v̂_ia) ],   v* = I_N

i.e. the paper's Hamming loss averaged per node (the paper leaves the normalisation open,
METHODS.md §4.7 item 4), so L ∈ [0, 2] and L = 0 when every image is matched to its other view.
Gradients reach c^v and c^e through :mod:`medvlp.losses.imle`.
"""
from __future__ import annotations

import numpy as np
import torch

from medvlp.losses.imle import Solver, imle_match


def hamming_loss(v: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """``(1/N) Σ v(1-v*) + v*(1-v)``; ``target`` defaults to the identity."""
    n = v.shape[0]
    target = torch.eye(n, dtype=v.dtype, device=v.device) if target is None else target
    return (v * (1 - target) + target * (1 - v)).sum() / n


def graph_matching_loss(cv: torch.Tensor, ce: torch.Tensor | None, edges_s: np.ndarray | None,
                        edges_t: np.ndarray | None, solver: Solver, *, lam: float = 1.0,
                        noise_temp: float = 0.1, n_samples: int = 1,
                        rng: np.random.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(loss, matching)`` for one graph pair; ``ce=None`` for a first-order solver."""
    v = imle_match(cv, ce, edges_s, edges_t, solver, lam=lam, noise_temp=noise_temp, n_samples=n_samples,
                   rng=rng)
    return hamming_loss(v), v.detach()
