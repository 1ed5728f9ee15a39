"""Cross-entropy over cosine logits with a fixed temperature (CLIP-style classification, ViP)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cosine_logits(image_feats: torch.Tensor, class_feats: torch.Tensor,
                  logit_scale: float = 100.0) -> torch.Tensor:
    r"""``logits[b, c] = s * <f_b / ||f_b||, t_c / ||t_c||>``: ``(B, D), (C, D) -> (B, C)``.

    ``s = logit_scale = 1 / temperature``; CLIP's learned value, frozen at 100 in ViP.
    """
    if image_feats.ndim != 2 or class_feats.ndim != 2 or image_feats.shape[1] != class_feats.shape[1]:
        raise ValueError(f"cosine_logits: expected (B, D) and (C, D), got {tuple(image_feats.shape)} "
                         f"and {tuple(class_feats.shape)}")
    return logit_scale * F.normalize(image_feats, dim=-1) @ F.normalize(class_feats, dim=-1).t()


def cosine_logit_ce(image_feats: torch.Tensor, class_feats: torch.Tensor, labels: torch.Tensor,
                    logit_scale: float = 100.0, label_smoothing: float = 0.0) -> torch.Tensor:
    r"""Mean cross-entropy of the cosine logits against integer class labels.

    With :math:`\hat f_b = f_b/\lVert f_b\rVert`, :math:`\hat t_c = t_c/\lVert t_c\rVert` and
    :math:`z_{bc} = s\,\langle \hat f_b, \hat t_c\rangle`:

    .. math::

        L = -\frac1B \sum_{b=1}^{B} \log \frac{\exp z_{b y_b}}{\sum_{c=1}^{C} \exp z_{bc}}

    (with ``label_smoothing`` = ε the target is ``(1-ε) onehot + ε/C``, as in ``F.cross_entropy``).

    Args:
        image_feats: ``(B, D)`` image embeddings (normalised here, so any scale is fine).
        class_feats: ``(C, D)`` one embedding per class (ViP: the merged symptoms ``s_c``).
        labels: ``(B,)`` class indices in ``[0, C)``.
        logit_scale: ``s``, the inverse temperature (100 for CLIP / ViP).
    """
    logits = cosine_logits(image_feats, class_feats, logit_scale)
    if labels.ndim != 1 or len(labels) != len(logits):
        raise ValueError(f"cosine_logit_ce: labels shape {tuple(labels.shape)}, expected ({len(logits)},)")
    return F.cross_entropy(logits, labels.long(), label_smoothing=label_smoothing)
