"""Atomic, ``weights_only``-loadable training checkpoints and RNG state capture.

One file, ``out_dir/checkpoint.pt``, written by the main rank::

    {"format": "medvlp.train.checkpoint/1",
     "step": int, "epoch": int, "batch_in_epoch": int,   # position: micro-batches done in `epoch`
     "world_size": int, "config": dict, "config_hash": str,
     "model": trainable state (medvlp.methods.base.trainable_state_dict),
     "extra": method.extra_state() or {},
     "optimizer": ..., "scheduler": ..., "scaler": ... or None,
     "rng": [rank0_state, rank1_state, ...]}           # gathered from every rank

RNG states of all ranks are gathered into the one file (they are a few KB each) so a resume needs
exactly one file. They are stored as tensors and plain lists, never pickled NumPy objects, so the
checkpoint loads with ``torch.load(path, weights_only=True)``.

Writes are atomic: the data goes to ``checkpoint.pt.tmp`` in the same directory, is fsync'ed and
then ``os.replace``'d over the old file, so a run killed at any moment leaves either the previous
or the new checkpoint, never a torn one.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medvlp.errors import DataError

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "medvlp.train.checkpoint/1"
REQUIRED_KEYS = ("format", "step", "epoch", "batch_in_epoch", "world_size", "config_hash",
                 "model", "optimizer", "scheduler", "rng")


def capture_rng_state() -> dict[str, Any]:
    """Python, NumPy, torch CPU and (if initialised) CUDA generator states as plain data."""
    version, internal, gauss_next = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["internal"].tolist()),
                     py["gauss_next"]))
    npy = state["numpy"]
    np.random.set_state(("MT19937", npy["keys"].numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (tmp file in the same dir, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    # fsync the directory too, so the rename itself survives a power cut.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a training checkpoint with ``weights_only=True``; a bad file raises ``DataError``."""
    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError/UnpicklingError/EOFError/... for bad files
        raise DataError(path, f"cannot read checkpoint ({type(e).__name__}: {e})",
                        "a file written by medvlp.train (torch.save, weights_only-loadable)") from e
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise DataError(path, "not a medvlp training checkpoint",
                        f"a dict with format={CHECKPOINT_FORMAT!r}")
    missing = [k for k in REQUIRED_KEYS if k not in state]
    if missing:
        raise DataError(path, f"checkpoint lacks keys {missing}", f"keys {list(REQUIRED_KEYS)}")
    return state
