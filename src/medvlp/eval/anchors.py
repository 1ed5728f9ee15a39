"""Published and measured reference numbers to print beside medvlp's results.

Transcribed from ``ANCHORS.md`` (shared project notes). All figures are test-split AUC /
accuracy on the official MedMNIST splits unless the note says otherwise. Compare only like with
like: same dataset, split, resolution and metric, and always name the row's source.
"""
from __future__ import annotations

from typing import Any

MEDMNIST_V2 = "MedMNIST v2 (Yang et al., Scientific Data 10:41, 2023)"
MEDMNIST_PLUS = "MedMNIST+ (Doerrich et al., 2024), frozen linear probe, mean of 3 seeds"
MEASURED = "measured on medvlp's 2-core CPU machines (ANCHORS.md, floors)"

# (dataset, source, model, auc, acc, note)
_ROWS: list[tuple[str, str, str, float, float, str]] = [
    ("pneumoniamnist", MEDMNIST_V2, "ResNet-18 (28)", 0.944, 0.854, "from scratch, 28 px"),
    ("pneumoniamnist", MEDMNIST_V2, "ResNet-18 (224)", 0.956, 0.864,
     "from scratch, upscaled to 224"),
    ("pneumoniamnist", MEDMNIST_V2, "ResNet-50 (28)", 0.948, 0.854, "from scratch, 28 px"),
    ("pneumoniamnist", MEDMNIST_V2, "ResNet-50 (224)", 0.962, 0.884,
     "from scratch, upscaled to 224"),
    ("pneumoniamnist", MEDMNIST_V2, "auto-sklearn", 0.942, 0.855, "AutoML"),
    ("pneumoniamnist", MEDMNIST_V2, "AutoKeras", 0.947, 0.878, "AutoML"),
    ("pneumoniamnist", MEDMNIST_V2, "Google AutoML Vision", 0.991, 0.946, "AutoML"),
    ("breastmnist", MEDMNIST_V2, "ResNet-18 (28)", 0.901, 0.863, "from scratch, 28 px"),
    ("breastmnist", MEDMNIST_V2, "ResNet-18 (224)", 0.891, 0.833, "from scratch, upscaled to 224"),
    ("breastmnist", MEDMNIST_V2, "ResNet-50 (28)", 0.857, 0.812, "from scratch, 28 px"),
    ("breastmnist", MEDMNIST_V2, "ResNet-50 (224)", 0.866, 0.842, "from scratch, upscaled to 224"),
    ("pneumoniamnist", MEDMNIST_PLUS, "DINO ViT-B/16 (ImageNet SSL)", 0.973, 0.866, "28 px"),
    ("pneumoniamnist", MEDMNIST_PLUS, "DINO ViT-B/16 (ImageNet SSL)", 0.976, 0.864, "64 px"),
    ("pneumoniamnist", MEDMNIST_PLUS, "ImageNet ResNet-18", 0.877, 0.744, "28 px"),
    ("breastmnist", MEDMNIST_PLUS, "DINO ViT-B/16 (ImageNet SSL)", 0.868, 0.833, "28 px"),
    ("breastmnist", MEDMNIST_PLUS, "DINO ViT-B/16 (ImageNet SSL)", 0.917, 0.857, "64 px"),
    ("breastmnist", MEDMNIST_PLUS, "ImageNet ResNet-18", 0.648, 0.731,
     "28 px; collapsed to one class"),
    ("pneumoniamnist", MEASURED, "logistic regression on raw pixels", 0.927, 0.849,
     "standardised pixels, C=0.01"),
    ("breastmnist", MEASURED, "logistic regression on raw pixels", 0.828, 0.808,
     "standardised pixels, C=0.01"),
    ("pneumoniamnist", MEASURED, "majority class", 0.5, 0.625, "floor"),
    ("breastmnist", MEASURED, "majority class", 0.5, 0.731, "floor"),
    ("pneumoniamnist", MEASURED, "random-init ResNet-18 (timm), frozen, linear probe", 0.752,
     0.715, "floor for untrained features"),
    ("breastmnist", MEASURED, "random-init ResNet-18 (timm), frozen, linear probe", 0.672,
     0.724, "floor for untrained features"),
    ("pneumoniamnist", MEASURED, "ResNet-18 from scratch, 5 epochs", 0.938, 0.864,
     "41 s on 2 cores"),
    ("breastmnist", MEASURED, "linear probe of the PneumoniaMNIST-trained ResNet-18", 0.744,
     0.737, "features trained on PneumoniaMNIST, 5 epochs"),
]


def anchor_rows(dataset: str) -> list[dict[str, Any]]:
    """Reference rows for ``dataset`` (case-insensitive registry name), e.g. "pneumoniamnist".

    Each row is ``{"source", "model", "auc", "acc", "note"}``; an unknown dataset gives ``[]``
    (there is simply nothing published to compare with).
    """
    key = dataset.lower()
    return [{"source": src, "model": model, "auc": auc, "acc": acc, "note": note}
            for ds, src, model, auc, acc, note in _ROWS if ds == key]


def anchored_datasets() -> list[str]:
    """Dataset names with at least one anchor row."""
    return sorted({row[0] for row in _ROWS})
