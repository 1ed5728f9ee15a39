"""M-FLAG's cosine alignment between image and text embeddings (BYOL-style, no negatives).

For projected embeddings ``p_v`` (image) and ``p_t`` (text) of the same B pairs,

    L_align = (1 / B) Σ_b ( 2 − 2·cos(p_v_b, p_t_b) )            (the term once; default)

which equals the mean squared distance ‖p̂_v − p̂_t‖² of the L2-normalised embeddings. The
authors' code (``utils/utils_trainer.py``, METHODS.md 5.2) adds the same term with the arguments
swapped, ``(2 − 2·cos(p_v, p_t)) + (2 − 2·cos(p_t, p_v))``; cosine is symmetric, so that is
exactly twice the single term (``doubled=True``), i.e. a doubled weight on alignment relative to
the orthogonality loss.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_alignment(p_img: torch.Tensor, p_txt: torch.Tensor, *, doubled: bool = False,
                     eps: float = 1e-8) -> torch.Tensor:
    """``mean_b (2 − 2 cos(p_img_b, p_txt_b))`` (× 2 with ``doubled``); a scalar in [0, 4] (or [0, 8])."""
    if p_img.ndim != 2 or p_img.shape != p_txt.shape:
        raise ValueError(f"cosine_alignment: p_img {tuple(p_img.shape)} and p_txt {tuple(p_txt.shape)} "
                         "must both be (B, D)")
    cos = F.cosine_similarity(p_img.float(), p_txt.float(), dim=-1, eps=eps)
    term = (2.0 - 2.0 * cos).mean()
    return 2.0 * term if doubled else term
