"""2D -> 3D transfer of a medvlp/timm ViT: a CT volume as a sequence of slices.

RECONSTRUCTION of the TGH-MoE paper's vision side (METHODS.md §3.2, [inferred]): every 2D weight
is reused unchanged; what is new starts as an identity, so a 1-slice volume gives the 2D model's
tokens exactly (tested).

- Slices: each slice (or, with ``slice_patch=2``, each pair of slices, averaged before the linear
  patch embedding, which equals a temporal patch of 2 inflated from the 2D kernel with weights
  halved, as video-capable 2D MLLMs do) goes through the 2D patch embedding and the 2D position
  embedding (CLS token included), giving ``(B, S', 1+h*w, D)``.
- Depth position (``depth_pos``): ``"rope"`` rotates a ``rope_fraction`` share of every head's
  query/key dims by the slice index (a depth axis added to the 2D positions, frequencies
  ``base^(-2i/d)`` as in 1D RoPE; slice 0 is not rotated), used in the 3D-attention blocks (in
  per-slice blocks a depth rotation cancels in q.k); ``"embed"``: a learned depth embedding,
  zero-initialised, added to every token of a slice; ``"none"``.
- Attention: the lower blocks attend within each slice (the 2D model as is); the top
  ``n_3d_blocks`` attend over all tokens of all slices.
- ``depth``: optionally keep only the first ``depth`` 2D blocks (a CPU-size switch; default all).
- MoE: blocks listed in ``moe_blocks`` get a :class:`~medvlp.models.moe.TGHMoE` around their FFN,
  driven by a prompt embedding.

Output of :meth:`forward`: ``(B, S', 1+h*w, D)`` after the final norm. :meth:`pooled` is the 2D
model's pooling per slice, averaged over slices.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from medvlp.errors import ConfigError
from medvlp.models.backbone import Backbone
from medvlp.models.moe import TGHMoE


def load_2d_backbone(name_or_folder: str | Path, *, random_init: bool = False, **overrides: Any) -> Backbone:
    """A medvlp 2D checkpoint folder, or a registry name (``random_init=True``: random weights,
    else the registry's ImageNet weights when available)."""
    from medvlp.models import create_model, from_pretrained

    if Path(name_or_folder).is_dir():
        return from_pretrained(name_or_folder)
    return create_model(str(name_or_folder), pretrained=False if random_init else None, **overrides)


def _rope(x: torch.Tensor, pos: torch.Tensor, n_rot: int, base: float) -> torch.Tensor:
    """Rotate the first ``n_rot`` dims of ``x`` (B, H, N, d) by positions ``pos`` (N,)."""
    if n_rot == 0:
        return x
    half = n_rot // 2
    freqs = base ** (-torch.arange(half, device=x.device, dtype=torch.float32) * 2 / n_rot)
    ang = pos.float()[:, None] * freqs[None]                       # (N, half)
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:n_rot], x[..., n_rot:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos, rest], dim=-1)


class VolumeViT(nn.Module):
    def __init__(self, backbone: Backbone, *, n_3d_blocks: int = 2,
                 depth_pos: Literal["rope", "embed", "none"] = "rope", slice_patch: int = 1,
                 max_slices: int = 64, rope_fraction: float = 1 / 3, rope_base: float = 10000.0,
                 depth: int | None = None, moe_blocks: list[int] | None = None,
                 moe_kwargs: dict[str, Any] | None = None, prompt_dim: int | None = None):
        super().__init__()
        if backbone.kind != "vit":
            raise ConfigError(f"VolumeViT needs a ViT backbone; got {backbone.config.get('name')!r} "
                              f"({backbone.kind})")
        if depth_pos not in ("rope", "embed", "none"):
            raise ConfigError(f"depth_pos={depth_pos!r}; expected 'rope', 'embed' or 'none'")
        if slice_patch not in (1, 2):
            raise ConfigError(f"slice_patch={slice_patch}; expected 1 or 2")
        self.backbone = backbone
        vit = backbone.model
        n_blocks = len(vit.blocks)
        self.depth = n_blocks if depth is None else int(depth)
        if not 1 <= self.depth <= n_blocks:
            raise ConfigError(f"depth={depth}: the 2D model has {n_blocks} blocks")
        if not 0 <= n_3d_blocks <= self.depth:
            raise ConfigError(f"n_3d_blocks={n_3d_blocks}; expected 0..{self.depth}")
        self.n_3d_blocks, self.depth_pos, self.slice_patch = n_3d_blocks, depth_pos, slice_patch
        dim = backbone.feature_dim
        heads = vit.blocks[0].attn.num_heads
        head_dim = dim // heads
        self.n_rot = 2 * int(head_dim * rope_fraction / 2) if depth_pos == "rope" else 0
        self.rope_base = rope_base
        self.max_slices = max_slices
        self.depth_embed = nn.Parameter(torch.zeros(max_slices, dim)) if depth_pos == "embed" else None
        self.moe_blocks = sorted(set(moe_blocks or []))
        if any(not 0 <= i < self.depth for i in self.moe_blocks):
            raise ConfigError(f"moe_blocks={self.moe_blocks}: blocks are 0..{self.depth - 1}")
        if self.moe_blocks and prompt_dim is None:
            raise ConfigError("moe_blocks need prompt_dim (the prompt embedding size)")
        self.moe = nn.ModuleDict({str(i): TGHMoE(vit.blocks[i].mlp, dim, prompt_dim, **(moe_kwargs or {}))
                                  for i in self.moe_blocks})
        self.feature_dim = dim
        self.num_prefix_tokens = backbone.num_prefix_tokens

    @property
    def first_3d_block(self) -> int:
        return self.depth - self.n_3d_blocks

    def config(self) -> dict[str, Any]:
        return {"n_3d_blocks": self.n_3d_blocks, "depth_pos": self.depth_pos,
                "slice_patch": self.slice_patch, "max_slices": self.max_slices, "depth": self.depth,
                "moe_blocks": self.moe_blocks, "rope_base": self.rope_base, "n_rot": self.n_rot}

    def _normalise(self, vol: torch.Tensor) -> torch.Tensor:
        """(B, S, H, W) or (B, 1, S, H, W) in [0, 1] -> (B, S, C, H, W) normalised like the 2D model."""
        if vol.ndim == 5:
            if vol.shape[1] != 1:
                raise ValueError(f"volume batch {tuple(vol.shape)}: expected (B, 1, S, H, W)")
            vol = vol[:, 0]
        if vol.ndim != 4:
            raise ValueError(f"volume batch {tuple(vol.shape)}: expected (B, S, H, W)")
        pp = self.backbone.preprocess
        if vol.shape[-1] != pp["img_size"] or vol.shape[-2] != pp["img_size"]:
            raise ValueError(f"slices are {tuple(vol.shape[-2:])}: the 2D model expects "
                             f"{pp['img_size']}x{pp['img_size']}")
        c = int(pp["in_chans"])
        mean = torch.tensor(pp["mean"], dtype=vol.dtype, device=vol.device).view(1, 1, c, 1, 1)
        std = torch.tensor(pp["std"], dtype=vol.dtype, device=vol.device).view(1, 1, c, 1, 1)
        return (vol[:, :, None].expand(-1, -1, c, -1, -1) - mean) / std

    def embed(self, vol: torch.Tensor) -> torch.Tensor:
        """Tokens after patch + 2D position (+ depth) embedding: (B, S', N, D)."""
        x = self._normalise(vol)
        b, s = x.shape[:2]
        vit = self.backbone.model
        if self.slice_patch == 2:
            if s % 2:
                x = torch.cat([x, x[:, -1:]], 1)  # repeat the last slice, as video MLLMs pad frames
            x = 0.5 * (x[:, 0::2] + x[:, 1::2])
            s = x.shape[1]
        if s > self.max_slices:
            raise ValueError(f"{s} slice tokens > max_slices={self.max_slices}")
        t = vit.patch_embed(x.flatten(0, 1))
        t = vit._pos_embed(t)
        t = vit.patch_drop(t)
        t = vit.norm_pre(t)
        t = t.view(b, s, *t.shape[1:])
        if self.depth_embed is not None:
            t = t + self.depth_embed[:s][None, :, None, :]
        return t

    def _attn_3d(self, attn: nn.Module, x: torch.Tensor, slice_pos: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        q, k = _rope(q, slice_pos, self.n_rot, self.rope_base), _rope(k, slice_pos, self.n_rot, self.rope_base)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.attn_drop.p if self.training else 0.0)
        o = attn.norm(o.transpose(1, 2).reshape(b, n, attn.attn_dim))
        return attn.proj_drop(attn.proj(o))

    def forward(self, vol: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(vol)
        b, s, n, d = x.shape
        if self.moe_blocks and prompt is None:
            raise ValueError("this VolumeViT has MoE blocks: pass the prompt embedding (B, P)")
        slice_pos = torch.arange(s, device=x.device).repeat_interleave(n)
        vit = self.backbone.model
        for i in range(self.depth):
            blk = vit.blocks[i]
            is3d = i >= self.first_3d_block
            h = x.reshape(b, s * n, d) if is3d else x.reshape(b * s, n, d)
            if is3d and self.n_rot:
                a = self._attn_3d(blk.attn, blk.norm1(h), slice_pos)
            else:
                a = blk.attn(blk.norm1(h))
            h = h + blk.drop_path1(blk.ls1(a))
            if str(i) in self.moe:
                hb = h.reshape(b, -1, d)  # MoE is token-wise: one prompt per volume
                f = self.moe[str(i)](blk.norm2(hb), prompt).reshape(h.shape)
            else:
                f = blk.mlp(blk.norm2(h))
            h = h + blk.drop_path2(blk.ls2(f))
            x = h.reshape(b, s, n, d)
        return vit.norm(x)

    def pooled(self, vol: torch.Tensor, prompt: torch.Tensor | None = None) -> torch.Tensor:
        """The 2D model's own pooling per slice (CLS or mean + fc_norm), averaged over slices."""
        x = self.forward(vol, prompt)
        b, s = x.shape[:2]
        return self.backbone.model.forward_head(x.flatten(0, 1), pre_logits=True).view(b, s, -1).mean(1)

    def aux_loss(self) -> torch.Tensor:
        if not self.moe:
            return torch.zeros(())
        return torch.stack([m.aux_loss for m in self.moe.values()]).mean()
