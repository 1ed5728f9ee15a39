"""Losses, one per file; each docstring states its formula."""
from medvlp.losses.masked_bce import masked_bce_with_logits

__all__ = ["masked_bce_with_logits"]
