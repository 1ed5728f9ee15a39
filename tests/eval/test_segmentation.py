from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp.data.imageset import ImageSet
from medvlp.errors import ConfigError, DataError
from medvlp.eval.seg_metrics import segmentation_metrics
from medvlp.eval.segmentation import (MultiScaleEncoder, UNetDecoder, run_segmentation_eval,
                                      segmentation_transfer)
from medvlp.models import create_model


def _reference_metrics(pred, target, num_classes):
    """Per-image / per-class loops; undefined (empty in both) entries skipped."""
    per_class, pooled = [], []
    for c in range(num_classes):
        scores, tp_s, fp_s, fn_s = [], 0, 0, 0
        for p, t in zip(pred, target):
            tp = int(np.sum((p == c) & (t == c)))
            fp = int(np.sum((p == c) & (t != c)))
            fn = int(np.sum((p != c) & (t == c)))
            tp_s, fp_s, fn_s = tp_s + tp, fp_s + fp, fn_s + fn
            if tp + fp + fn:
                scores.append(2 * tp / (2 * tp + fp + fn))
        per_class.append(np.mean(scores) if scores else np.nan)
        pooled.append(2 * tp_s / (2 * tp_s + fp_s + fn_s) if tp_s + fp_s + fn_s else np.nan)
    return per_class, pooled


def test_metrics_match_loop_reference_with_absent_classes():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 3, size=(5, 6, 7))
    pred = np.where(rng.random((5, 6, 7)) < 0.7, target, rng.integers(0, 3, size=(5, 6, 7)))
    target[2][target[2] == 2] = 0
    pred[2][pred[2] == 2] = 0          # class 2 absent in both on image 2: excluded, not 1 or 0
    target[3][target[3] == 1] = 0      # class 1 absent in truth but predicted on image 3: scores 0
    m = segmentation_metrics(pred, target, ["bg", "a", "b"])
    per_class, pooled = _reference_metrics(pred, target, 3)
    for name, want in zip(["bg", "a", "b"], per_class):
        assert m["dice_per_class"][name] == pytest.approx(want)
    assert m["dice"] == pytest.approx(np.mean(per_class[1:]))
    assert m["pooled_dice"] == pytest.approx(np.mean(pooled[1:]))
    d = m["dice_per_class"]["a"]
    assert m["iou_per_class"]["a"] < d  # IoU = D / (2 - D) per image, below Dice unless 0 or 1
    perfect = segmentation_metrics(target, target, ["bg", "a", "b"])
    assert perfect["dice"] == perfect["iou"] == 1.0


def _blob_set(n=48, size=32, seed=0):
    """Bright discs on noise; the mask is the disc. Learnable by any encoder in a few epochs."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images, masks = [], []
    for _ in range(n):
        cy, cx, r = rng.integers(8, size - 8, 2).tolist() + [int(rng.integers(4, 8))]
        m = ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
        img = np.clip(rng.normal(60, 20, (size, size)) + 150 * m, 0, 255).astype(np.uint8)
        images.append(img)
        masks.append(m)
    split = np.array(["train"] * (n - 16) + ["val"] * 8 + ["test"] * 8)
    return ImageSet(name="blobs", images=np.stack(images), labels=np.zeros(n, dtype=np.int64),
                    task="binary", label_names=["x"], split=split, masks=np.stack(masks))


def test_multiscale_features_cnn_and_vit():
    cnn = create_model("resnet18", img_size=64)
    feats = MultiScaleEncoder(cnn)(torch.randn(2, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [32, 16, 8, 4, 2]
    vit = create_model("vit_tiny_p4_28")
    enc = MultiScaleEncoder(vit, vit_levels=4)
    assert enc.indices == [2, 5, 8, 11]
    pyr = enc.pyramid(enc(torch.randn(2, vit.in_chans, 28, 28)))
    # patch 4 on a 7x7 grid: upsampling stops at stride 1 (28 px), never beyond the input
    assert [tuple(f.shape[1:]) for f in pyr] == [(192, 28, 28), (192, 28, 28), (192, 14, 14), (192, 7, 7)]
    logits = UNetDecoder([f.shape[1] for f in pyr], 3, width=16)(pyr, (28, 28))
    assert logits.shape == (2, 3, 28, 28)


@pytest.mark.slow
def test_frozen_transfer_learns_and_leaves_the_backbone_alone():
    data = _blob_set()
    torch.manual_seed(0)
    backbone = create_model("resnet18", img_size=32)
    before = {k: v.clone() for k, v in backbone.state_dict().items()}
    r = segmentation_transfer(backbone, data, epochs=6, batch_size=8, decoder_width=32, seed=0)
    assert r["dice"] > 0.6, r["val_history"]  # an all-background predictor scores 0
    assert r["feature_cache"] and r["trainable_params"] == r["decoder_params"]
    assert 1 <= r["best_epoch"] <= 6 and r["val"]["dice"] == max(h["val_dice"] for h in r["val_history"])
    assert all(torch.equal(before[k], v) for k, v in backbone.state_dict().items())
    again = segmentation_transfer(backbone, data, epochs=6, batch_size=8, decoder_width=32, seed=0)
    assert again["dice"] == pytest.approx(r["dice"], abs=1e-6)  # seeded end to end


def test_finetune_trains_the_encoder_and_fraction_subsets(tmp_path):
    data = _blob_set(n=40, size=32)
    backbone = create_model("resnet18_28", img_size=32)
    r = segmentation_transfer(backbone, data, fraction=0.25, freeze_encoder=False, epochs=1,
                              batch_size=4, decoder_width=16, min_steps_per_epoch=2)
    assert r["n_train"] == 6 and r["steps_per_epoch"] == 2
    assert r["trainable_params"] > r["decoder_params"] and not r["feature_cache"]
    r2 = segmentation_transfer(backbone, data, fraction=0.25, epochs=1, batch_size=4,
                               decoder_width=16, seed=1, min_steps_per_epoch=1)
    assert r2["train_index_hash"] != r["train_index_hash"]
    out = run_segmentation_eval("resnet18_28", data, fractions=(0.5, 1.0), img_size=32, epochs=1,
                                batch_size=8, decoder_width=16, min_steps_per_epoch=1)
    assert set(out["summary"]) == {"0.5", "1.0"} and len(out["results"]) == 2
    assert out["results"][0]["n_train"] == 12 and out["results"][1]["n_train"] == 24


def test_bad_inputs_raise_clear_errors():
    data = _blob_set(n=24, size=28)
    vit = create_model("vit_tiny_p4_28")
    with pytest.raises(ConfigError, match="img_size"):
        segmentation_transfer(vit, data, img_size=32, epochs=1)
    no_masks = ImageSet(name="nomask", images=data.images, labels=data.labels, task="binary",
                        label_names=["x"], split=data.split, source="/data/nomask.npz")
    with pytest.raises(DataError, match="nomask.npz.*no masks"):
        segmentation_transfer(vit, no_masks, epochs=1)
    data.masks[0, 0, 0] = 3
    with pytest.raises(DataError, match="mask value 3"):
        segmentation_transfer(vit, data, epochs=1)


def test_bench_summary_claim_and_markdown_report_skipped_encoders():
    from medvlp.bench.segmentation import SUITES, claims, markdown, summarize

    rows = [{"encoder": e, "dataset": "busi", "fraction": f, "seed": s, "dice": d, "iou": d / 2}
            for e, f, s, d in [("ImageNet", 1.0, 0, 0.60), ("ImageNet", 0.01, 0, 0.30),
                               ("M-FLAG", 0.01, 0, 0.70), ("M-FLAG", 0.01, 1, 0.50),
                               ("random init", 0.01, 0, 0.20)]]
    summary = summarize(rows)
    assert summary["busi"]["M-FLAG"]["0.01"]["dice_mean"] == pytest.approx(0.60)
    assert summary["busi"]["M-FLAG"]["0.01"]["n"] == 2
    by_enc = {c["encoder"]: c for c in claims(summary, {})}
    assert by_enc["M-FLAG"]["holds"] is False  # 0.60 is not above ImageNet's 0.60
    assert by_enc["random init"]["holds"] is False
    encoders = {"VIVID": {"skipped": "medvlp.methods.vivid is not importable"}}
    no_mflag = claims(summarize([r for r in rows if r["encoder"] != "M-FLAG"]),
                      {"M-FLAG": {"failed": "boom"}})
    assert any(c["encoder"] == "M-FLAG" and c["why_untested"] == "boom" for c in no_mflag)
    result = {"config": SUITES["segmentation_quick"], "summary": summary, "encoders": encoders,
              "claims": claims(summary, encoders), "architecture": "x", "datasets": {}}
    text = "\n".join(markdown(result))
    assert "VIVID: medvlp.methods.vivid is not importable" in text and "does not hold" in text
    assert "2-core CPU run" in "\n".join(markdown({**result, "machine": {"cpu_count": 2}}))
