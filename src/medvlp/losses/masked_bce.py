"""Binary cross-entropy with logits that ignores missing (NaN) targets."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def masked_bce_with_logits(logits: torch.Tensor, targets: torch.Tensor,
                           pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    r"""Mean binary cross-entropy over the entries whose target is known.

    With mask :math:`m_{ic} = [y_{ic} \text{ is not NaN}]`, per-class positive weight
    :math:`w_c` (1 when ``pos_weight`` is None) and :math:`\sigma` the logistic function:

    .. math::

        \ell_{ic} = -\big[w_c\, y_{ic} \log\sigma(x_{ic}) + (1 - y_{ic}) \log(1 - \sigma(x_{ic}))\big]

        L = \frac{\sum_{i,c} m_{ic}\, \ell_{ic}}{\max\big(1, \sum_{i,c} m_{ic}\big)}

    NaN targets count in neither the numerator nor the denominator, so a label missing for one
    study neither pulls its logit nor dilutes the loss of the labelled ones. When every target is
    missing the loss is 0 (and still attached to the graph, with zero gradient).

    Args:
        logits: ``(B, C)`` (or any shape) raw scores.
        targets: same shape as ``logits``; values in [0, 1] or NaN for missing.
        pos_weight: optional ``(C,)`` weight of the positive term, broadcast over the last dim.
    """
    if logits.shape != targets.shape:
        raise ValueError(f"masked_bce_with_logits: logits shape {tuple(logits.shape)} != targets "
                         f"shape {tuple(targets.shape)}")
    mask = ~torch.isnan(targets)
    filled = torch.where(mask, targets, torch.zeros_like(targets)).to(logits.dtype)
    per_entry = F.binary_cross_entropy_with_logits(logits, filled, pos_weight=pos_weight,
                                                   reduction="none")
    # where() rather than multiplication so an inf loss on a masked entry cannot leak in as NaN.
    per_entry = torch.where(mask, per_entry, torch.zeros_like(per_entry))
    return per_entry.sum() / mask.sum().clamp_min(1).to(per_entry.dtype)
