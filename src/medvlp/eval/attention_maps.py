"""SPD attention maps over images, as an HTML report section (VIVID-Med diagnostics, METHODS.md 1.9.6)."""
from __future__ import annotations

import numpy as np

from medvlp.eval.report import ImageGridSection, TextSection
from medvlp.methods.vivid_diagnostics import attention_diagnostics, sample_images


def attention_section(method, imageset, transform, *, n: int = 4, title: str = "SPD attention maps"):
    """An ``ImageGridSection``: each image, then one overlay per SPD group, captioned with its entropy.

    ``method``: anything with ``backbone`` and ``prefix(images)`` — a training ``VIVIDMethod`` or a
    saved model via :func:`medvlp.methods.vivid.load_vivid_prefix_model`.
    """
    images = sample_images(imageset, transform, n)
    diag = attention_diagnostics(method, images)
    if not diag.get("spd") or diag["maps"] is None:
        return TextSection(title, "no SPD attention maps (no-SPD variant or non-square patch grid)")
    pics, overlays, captions = [], [], []
    for i in range(len(images)):
        raw = np.asarray(imageset.images[i])
        for g in range(diag["maps"].shape[1]):
            pics.append(raw)
            overlays.append(diag["maps"][i, g])
            captions.append(f"image {i}, group {g} (H={diag['entropy_per_group'][g]:.2f})")
    return ImageGridSection(title, pics, overlays, captions, ncols=diag["maps"].shape[1])
