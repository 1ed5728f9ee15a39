"""VIVID-Med diagnostics (METHODS.md 1.1, 1.9.6): what the teacher generates and where SPD looks.

- :func:`generation_diagnostics`: greedy generations of the frozen LM from each image's visual
  prefix (``CausalLM.generate_from_prefix``); JSON validity rate and the rate of ``null`` states
  among the findings of valid outputs (the authors' collapse symptom was a null rate of 1.0).
- :func:`attention_diagnostics`: SPD attention entropy per group (near 0 = a group collapsed onto
  one token, the degenerate orthogonality of 1.9.6), pairwise orthogonality, and per-group maps
  over the patch grid.
- the maps drawn over the images for the HTML report: :func:`medvlp.eval.attention_maps.attention_section`.
"""
from __future__ import annotations

import json
import math
from typing import Any

import torch

from medvlp.losses.attention_orthogonality import attention_entropy, attention_orthogonality


def parse_generated_json(text: str) -> dict | None:
    """The first JSON object in ``text`` (generations may carry trailing tokens), or None."""
    start = text.find("{")
    if start < 0:
        return None
    try:
        obj, _ = json.JSONDecoder().raw_decode(text[start:])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def sample_images(imageset, transform, n: int) -> torch.Tensor:
    return torch.stack([transform(imageset.images[i]) for i in range(min(n, len(imageset)))])


@torch.no_grad()
def generation_diagnostics(method, imageset, transform, *, n: int = 32, batch_size: int = 8,
                           max_new_tokens: int = 256, prompt: str | None = None) -> dict[str, Any]:
    from medvlp.knowledge.field_query import DEFAULT_PROMPT

    prompt = prompt or DEFAULT_PROMPT
    was = method.training
    method.eval()
    images = sample_images(imageset, transform, n)
    texts: list[str] = []
    for s in range(0, len(images), batch_size):
        prefix, _ = method.prefix(images[s:s + batch_size])
        texts += method.lm.generate_from_prefix(prefix, [prompt] * len(prefix), max_new_tokens=max_new_tokens)
    method.train(was)
    parsed = [parse_generated_json(t) for t in texts]
    valid = [p for p in parsed if p is not None]
    states = [f.get("state") if isinstance(f, dict) else f
              for p in valid for f in (p.get("findings") or {}).values()] if valid else []
    return {"n": len(texts), "json_valid_rate": len(valid) / max(len(texts), 1),
            "null_rate": (sum(s is None for s in states) / len(states)) if states else None,
            "n_states": len(states), "examples": texts[:3], "prompt": prompt}


@torch.no_grad()
def attention_diagnostics(method, images: torch.Tensor) -> dict[str, Any]:
    """Entropy per group (nats; uniform = log N), orthogonality, and patch-grid maps (B, G, h, w)."""
    was = method.training
    method.eval()
    _, attn = method.prefix(images)
    method.train(was)
    if attn is None:
        return {"spd": False}
    n_prefix = int(getattr(method.backbone, "num_prefix_tokens", 0))
    maps = attn.mean(2)[..., n_prefix:]                   # (B, G, patches)
    side = int(math.isqrt(maps.shape[-1]))
    grid = maps.reshape(*maps.shape[:2], side, side) if side * side == maps.shape[-1] else None
    return {"spd": True, "entropy_per_group": attention_entropy(attn).tolist(),
            "uniform_entropy": math.log(attn.shape[-1]), "orthogonality": float(attention_orthogonality(attn)),
            "maps": None if grid is None else grid.cpu().numpy()}
