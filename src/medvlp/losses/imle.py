"""Implicit MLE gradients through a black-box graph-matching solver (LVM-Med, Algorithm 1).

The solver maps affinities θ = (c^v, c^e) to a permutation ``v = MAP(θ)`` (it maximises
``<c^v, v> + Σ c^e v v``). It is piecewise constant, so IMLE (Niepert et al. 2021) replaces its
gradient by the difference of two solves:

- forward: ``ε ~ Gumbel(0, 1)``, ``ε' ~ Gumbel(0, 1)``; ``ṽ = MAP(c^v + τ_v ε, c^e + τ_e ε')``;
- backward, with ``g = ∂L/∂ṽ`` (``1 - 2v*`` for the Hamming loss, divided by N when averaged):
  ``θ_λ = (c^v + τ_v ε - λ' g,  c^e + τ_e ε')``, ``v' = MAP(θ_λ)`` and

      ∂L/∂c^v_ia ≈ (ṽ_ia - v'_ia) / λ',       ∂L/∂c^e_(ij),(ab) ≈ (ṽ_ia ṽ_jb - v'_ia v'_jb) / λ'

  (the edge term follows the pairwise products of the matchings, as in the paper).

Scaling (the paper's λ = 80 and unit-scale Gumbel assume its cost range, METHODS.md §4.6): we
express both relative to the spread of the current costs, ``r_v = max c^v - min c^v`` and
``r_e = max c^e - min c^e`` (detached, per graph):

- noise: ``τ_v = noise_temp · r_v``, ``τ_e = noise_temp · r_e`` (``noise_temp=0`` is the
  "no Gumbel noise" ablation);
- step: ``λ' = lam · r / max|g|`` with ``r = r_v + (|E^s|/N)·r_e`` (``r = r_v`` without edges), the
  range of one node's share of the objective; so ``lam = 1`` moves a node's target costs by about
  that range where the loss gradient is largest, whatever the loss normalisation. (Scaling by
  ``r_v`` alone fails at initialisation: for a random-init ResNet we measured r_v ≈ 0.1 while the
  edge term, cosines of differences, spans ~2 over ~6 edges per node, so the target solve never
  differed from the sampled one and the encoder got no gradient.)

With ``n_samples > 1`` the forward returns the mean of the sampled matchings and the backward the
mean of the per-sample estimates. As λ' → 0, the expected estimate equals the gradient of the
perturbed objective ``E_ε[<g, MAP(θ + ε)>]`` (test: finite differences).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

Solver = Callable[[np.ndarray, "np.ndarray | None", "np.ndarray | None", "np.ndarray | None"], np.ndarray]


def _range(x: np.ndarray) -> float:
    return float(x.max() - x.min()) if x.size else 0.0


class IMLEMatching(torch.autograd.Function):
    """``IMLEMatching.apply(cv, ce, edges_s, edges_t, solver, lam, noise_temp, n_samples, rng)``.

    cv (N, N) and ce (Es, Et) tensors (``ce`` may be an empty (0, 0) tensor for a first-order
    solver); edges_s/edges_t (E, 2) integer numpy arrays; ``rng`` a ``numpy.random.Generator``.
    Returns the (mean) matching (N, N), a float tensor without grad of its own.
    """

    @staticmethod
    def forward(ctx, cv, ce, edges_s, edges_t, solver, lam, noise_temp, n_samples, rng):
        cv_np = cv.detach().cpu().double().numpy()
        has_edges = ce.numel() > 0
        ce_np = ce.detach().cpu().double().numpy() if has_edges else None
        r_v, r_e = max(_range(cv_np), 1e-6), max(_range(ce_np), 1e-6) if has_edges else 0.0
        # One node's share of the objective spans about r_v + (edges per node)·r_e: the IMLE step
        # must be on that scale, or a large edge term would make every target solve equal ṽ.
        r_obj = r_v + (len(edges_s) / cv_np.shape[0]) * r_e if has_edges else r_v
        samples, noisy = [], []
        for _ in range(n_samples):
            pv = cv_np + noise_temp * r_v * rng.gumbel(size=cv_np.shape)
            pe = ce_np + noise_temp * r_e * rng.gumbel(size=ce_np.shape) if has_edges else None
            samples.append(solver(pv, pe, edges_s, edges_t))
            noisy.append((pv, pe))
        ctx.stash = (samples, noisy, edges_s, edges_t, solver, lam, r_obj, has_edges, ce.shape)
        return torch.as_tensor(np.mean(samples, 0), dtype=cv.dtype, device=cv.device)

    @staticmethod
    def backward(ctx, grad_v):
        samples, noisy, edges_s, edges_t, solver, lam, r_obj, has_edges, ce_shape = ctx.stash
        g = grad_v.detach().cpu().double().numpy()
        g_max = float(np.abs(g).max())
        if g_max == 0:
            return (torch.zeros_like(grad_v), torch.zeros(ce_shape, dtype=grad_v.dtype, device=grad_v.device),
                    None, None, None, None, None, None, None)
        step = lam * r_obj / g_max
        grad_cv = np.zeros_like(g)
        grad_ce = np.zeros(ce_shape) if has_edges else None
        for v, (pv, pe) in zip(samples, noisy):
            v_target = solver(pv - step * g, pe, edges_s, edges_t)
            grad_cv += (v - v_target) / step
            if has_edges:
                pair = v[edges_s[:, 0, None], edges_t[None, :, 0]] * v[edges_s[:, 1, None], edges_t[None, :, 1]]
                pair_t = (v_target[edges_s[:, 0, None], edges_t[None, :, 0]]
                          * v_target[edges_s[:, 1, None], edges_t[None, :, 1]])
                grad_ce += (pair - pair_t) / step
        n = len(samples)
        out_v = torch.as_tensor(grad_cv / n, dtype=grad_v.dtype, device=grad_v.device)
        out_e = (torch.as_tensor(grad_ce / n, dtype=grad_v.dtype, device=grad_v.device) if has_edges
                 else torch.zeros(ce_shape, dtype=grad_v.dtype, device=grad_v.device))
        return out_v, out_e, None, None, None, None, None, None, None


def imle_match(cv: torch.Tensor, ce: torch.Tensor | None, edges_s: np.ndarray | None, edges_t: np.ndarray | None,
               solver: Solver, *, lam: float = 1.0, noise_temp: float = 0.1, n_samples: int = 1,
               rng: np.random.Generator | None = None) -> torch.Tensor:
    """Differentiable (in the IMLE sense) matching of one graph pair; see the module doc."""
    if lam <= 0:
        raise ValueError(f"imle_match: lam={lam}; expected > 0")
    if noise_temp < 0 or n_samples < 1:
        raise ValueError(f"imle_match: noise_temp={noise_temp} (>= 0), n_samples={n_samples} (>= 1)")
    if ce is None:
        ce = cv.new_zeros((0, 0))
    rng = rng if rng is not None else np.random.default_rng()
    return IMLEMatching.apply(cv, ce, edges_s, edges_t, solver, lam, noise_temp, n_samples, rng)
