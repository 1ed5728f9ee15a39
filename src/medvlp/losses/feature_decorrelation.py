"""Feature decorrelation (M-FLAG's latent-space orthogonality, Barlow-Twins-style self-correlation).

For a batch of features ``X`` (B × D), optionally transformed column-wise into ``X̃``:

- ``center``:      x̃_bi = x_bi − mean_b x_bi
- ``standardize``: x̃_bi = (x_bi − mean_b x_bi) / std_b x_bi              (Barlow Twins' BN, biased std)
- ``l2_normalize``: x̃_bi = x_bi / ‖x_·i‖₂ (each feature unit-norm over the batch; then C_ii = 1)

the self-correlation ``C = X̃ᵀX̃ / n`` (D × D) with ``n = divisor`` (default: 1 after
``l2_normalize``, else the actual batch B) and

    L = scale · [ Σ_i (C_ii − 1)² + off_diag_weight · Σ_{i≠j} C_ij² ]

Presets (METHODS.md 5.2 and 6.6):

- :data:`MFLAG_CODE` — the authors' code: X = the un-projected image embedding, **not centred, not
  normalised**, ``n = B_cfg`` (the configured batch size, 512 there, not the actual batch),
  ``off_diag_weight = 0.0051`` and ``scale = ½``.
- :data:`MFLAG_PAPER` — our reading of the paper's "orthogonal latent space" [inferred: the paper
  text was not available, METHODS.md 5.6.1]: features L2-normalised over the batch, so
  ``C`` is the cosine-similarity matrix between feature columns, with unit off-diagonal weight
  and ``scale = 1``.

Rank note (METHODS.md 5.5): ``C`` has rank ≤ min(B, D), so when D > B the off-diagonal term cannot
reach zero while the diagonal is 1; its floor is positive. :func:`rank_deficit` reports D − B.
"""
from __future__ import annotations

from typing import Any

import torch

MFLAG_CODE: dict[str, Any] = {"center": False, "standardize": False, "l2_normalize": False,
                              "off_diag_weight": 0.0051, "scale": 0.5}
MFLAG_PAPER: dict[str, Any] = {"center": False, "standardize": False, "l2_normalize": True,
                               "off_diag_weight": 1.0, "scale": 1.0}


def feature_decorrelation(x: torch.Tensor, *, center: bool = False, standardize: bool = False,
                          l2_normalize: bool = False, divisor: float | None = None,
                          off_diag_weight: float = 0.0051, scale: float = 0.5,
                          eps: float = 1e-5) -> torch.Tensor:
    """The decorrelation loss of a (B, D) feature batch (formula in the module docstring); a scalar."""
    if x.ndim != 2:
        raise ValueError(f"feature_decorrelation: x has shape {tuple(x.shape)}; expected (B, D)")
    if standardize and l2_normalize:
        raise ValueError("feature_decorrelation: choose standardize or l2_normalize, not both")
    if divisor is not None and divisor <= 0:
        raise ValueError(f"feature_decorrelation: divisor={divisor}; expected > 0")
    b = x.shape[0]
    if (standardize or center) and b < 2:
        raise ValueError("feature_decorrelation: centring/standardising needs a batch of at least 2")
    x = x.float()
    if center or standardize:
        x = x - x.mean(dim=0, keepdim=True)
    if standardize:
        x = x / torch.sqrt(x.pow(2).mean(dim=0, keepdim=True) + eps)
    if l2_normalize:
        x = x / torch.sqrt(x.pow(2).sum(dim=0, keepdim=True) + eps)
    n = divisor if divisor is not None else (1.0 if l2_normalize else float(b))
    c = x.T @ x / n
    diag = torch.diagonal(c)
    on = (diag - 1.0).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return scale * (on + off_diag_weight * off)


def rank_deficit(batch_size: int, feature_dim: int) -> int:
    """How many dimensions ``C`` lacks to reach the identity: ``max(0, D − B)``."""
    return max(0, int(feature_dim) - int(batch_size))
