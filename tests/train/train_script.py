"""Tiny end-to-end training run used by the engine tests (in-process and as a subprocess).

    python tests/train/train_script.py --out DIR [--max-steps 8 --batch-size 16 ...] [--resume]

Trains SupervisedMethod(tiny ViT, binary) on the first ``--n`` PneumoniaMNIST train images,
read directly with NumPy from the bundled npz (no medvlp.data readers), and prints the result as
one JSON line. ``--augment``/``--dropout`` switch on per-rank randomness (random flips drawn from
the global torch RNG, dropout) so the kill/resume test also exercises RNG restoration; the DDP test
leaves them off. ``--delay`` sleeps per sample so a test can kill the run mid-way.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

import medvlp
from medvlp.methods import SupervisedMethod
from medvlp.models import create_model
from medvlp.train import TrainConfig, fit

NPZ = Path(medvlp.__file__).parent / "data" / "bundled" / "pneumoniamnist.npz"


class PneumoniaSubset(Dataset):
    """``{"image": (1,28,28) float in [-1,1], "label": int64, "index": int64}`` records."""

    def __init__(self, n: int = 512, augment: bool = False, delay: float = 0.0):
        with np.load(NPZ) as z:
            images = z["train_images"][:n].astype(np.float32) / 255.0
            labels = z["train_labels"][:n, 0].astype(np.int64)
        self.images = torch.from_numpy((images - 0.5) / 0.5).unsqueeze(1)
        self.labels = torch.from_numpy(labels)
        self.augment = augment
        self.delay = delay

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if self.delay:
            time.sleep(self.delay)
        image = self.images[i]
        if self.augment and torch.rand(()) < 0.5:
            image = image.flip(-1)
        return {"image": image, "label": self.labels[i], "index": torch.tensor(i)}


def build_method(seed: int = 0, dropout: float = 0.0) -> SupervisedMethod:
    torch.manual_seed(seed)  # identical initial weights in every process
    backbone = create_model("vit_tiny_p4_28", depth=2, drop_rate=dropout, proj_drop_rate=dropout)
    return SupervisedMethod(backbone, num_outputs=1, task="binary")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--accum", type=int, default=1)
    ap.add_argument("--max-steps", type=int, default=8)
    ap.add_argument("--ckpt-every", type=int, default=0)
    ap.add_argument("--log-every", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--delay", type=float, default=0.0)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(1)  # same kernels, same reduction order, in every process
    cfg = TrainConfig(max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.accum,
                      lr=args.lr, warmup_steps=args.warmup, seed=args.seed, device="cpu",
                      ckpt_every=args.ckpt_every, log_every=args.log_every, progress=False)
    result = fit(build_method(args.seed, args.dropout),
                 PneumoniaSubset(args.n, augment=args.augment, delay=args.delay), cfg, args.out,
                 resume=args.resume)
    print(json.dumps({"steps": result.steps, "final": result.final,
                      "losses": [r["loss"] for r in result.history]}))


if __name__ == "__main__":
    main()
