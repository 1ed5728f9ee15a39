"""Methods: one file per method, each an ``nn.Module`` whose ``forward(batch)`` returns losses.

See :mod:`medvlp.methods.base` for the protocol the training engine relies on.
"""
from medvlp.methods.base import (
    Method,
    default_param_groups,
    frozen_state_names,
    load_trainable_state_dict,
    trainable_parameters,
    trainable_state_dict,
)
from medvlp.methods.supervised import SupervisedMethod

__all__ = [
    "Method",
    "SupervisedMethod",
    "default_param_groups",
    "frozen_state_names",
    "load_trainable_state_dict",
    "trainable_parameters",
    "trainable_state_dict",
]
