import json

import numpy as np
import pytest
import torch

from medvlp.eval.finetune import finetune
from medvlp.models import Backbone, create_model
from medvlp.train.engine import TrainConfig


def _tiny_vit() -> Backbone:
    torch.manual_seed(0)
    # Narrower than the usual test ViT: fine-tuning runs backward passes, keep it fast on 2 cores.
    return create_model("vit_tiny_p4_28", patch_size=7, depth=1, embed_dim=48, num_heads=3)


def test_finetune_label_fraction_selects_best_val_epoch(pneumonia, tmp_path):
    rng = np.random.default_rng(0)
    idx = np.concatenate([rng.choice(np.flatnonzero(pneumonia.split == s), n, replace=False)
                          for s, n in (("train", 128), ("val", 64), ("test", 64))])
    ds = pneumonia.subset(np.sort(idx))
    backbone = _tiny_vit()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=16, lr=1e-3, progress=False, device="cpu")
    out = finetune(backbone, ds, fraction=0.5, seed=1, train_cfg=cfg, out_dir=tmp_path / "ft")
    json.dumps(out)  # the record is JSON-serialisable
    assert out["n_train"] == 64  # stratified half of 128, rounded per class
    assert [h["epoch"] for h in out["val_history"]] == [1.0, 2.0, 3.0]
    aucs = [h["macro_auc"] for h in out["val_history"]]
    assert out["best_epoch"] == out["val_history"][int(np.argmax(aucs))]["epoch"]
    assert out["val_metrics"]["macro_auc"] == pytest.approx(max(aucs))
    assert 0.0 <= out["metrics"]["macro_auc"] <= 1.0 and out["metrics"]["n"] == 64
    for k, v in backbone.state_dict().items():  # the caller's backbone is untouched
        assert torch.equal(v, before[k])
    again = finetune(_tiny_vit(), ds, fraction=0.5, seed=1, train_cfg=cfg,
                     out_dir=tmp_path / "ft2")
    assert again["metrics"] == out["metrics"] and again["train_index_hash"] == out[
        "train_index_hash"]
