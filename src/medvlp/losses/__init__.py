"""Losses, one per file; each docstring states its formula and each is tested against a direct
reference computation."""
from medvlp.losses.alignment import cosine_alignment
from medvlp.losses.attention_orthogonality import attention_entropy, attention_orthogonality
from medvlp.losses.cosine_logit_ce import cosine_logit_ce, cosine_logits
from medvlp.losses.dice import DiceCELoss, soft_dice_loss
from medvlp.losses.feature_decorrelation import feature_decorrelation
from medvlp.losses.graph_matching import graph_matching_loss, hamming_loss
from medvlp.losses.imle import imle_match
from medvlp.losses.info_nce import nt_xent
from medvlp.losses.masked_bce import masked_bce_with_logits
from medvlp.losses.moe_load_balance import moe_load_balance
from medvlp.losses.token_weighted_ce import token_weighted_ce

__all__ = [
    "DiceCELoss",
    "attention_entropy",
    "attention_orthogonality",
    "cosine_alignment",
    "cosine_logit_ce",
    "cosine_logits",
    "feature_decorrelation",
    "graph_matching_loss",
    "hamming_loss",
    "imle_match",
    "masked_bce_with_logits",
    "moe_load_balance",
    "nt_xent",
    "soft_dice_loss",
    "token_weighted_ce",
]
