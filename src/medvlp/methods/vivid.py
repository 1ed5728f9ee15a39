"""VIVID-Med (METHODS.md 1): a frozen causal LM teaches a ViT through structured UMS JSON.

Forward pass for a batch (images, tokenised ``prompt + target``)::

    X       = ViT.forward_features(img)                   # (B, N, D), all tokens
    prefix  = VisualPrefix(X)                             # (B, P, H): [SPD ; MLP(X)] or [learned ; MLP(X)]
    embeds  = concat(prefix, LM.embed(input_ids))         # no no_grad: grads flow through the LM
    logits  = LM(embeds, [1]*P ++ attention_mask)
    L       = L_tok(logits, [-100]*P ++ labels, [0]*P ++ weights) + lambda_ortho * L_ortho(attn)

The LM is frozen (``requires_grad=False``, eval) and never saved; only the ViT, the SPD/prefix
and the projector are trained. The saved model folder holds the ViT (a plain timm model) plus
``vivid_prefix.safetensors``/``.json`` (the SPD + projector, for diagnostics), never the LM.

Paper vs code choices (docs/vivid.md): answerability masking and field-query training default ON
(paper/docs; the headline config had neither, METHODS.md 1.9.1); ``false_weight`` defaults to 0.1
because 0.0 made the authors' decoder collapse to all-null (1.4); lambda_ortho 0.01 (paper; the
code's 0.02 is an option); findings carry only ``state`` (no ``score`` key, 1.9.8).
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from medvlp.config import StrictConfig
from medvlp.errors import ConfigError
from medvlp.losses.attention_orthogonality import attention_entropy, attention_orthogonality
from medvlp.losses.token_weighted_ce import IGNORE_INDEX, token_weighted_ce
from medvlp.methods.base import Method, default_param_groups
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models.visual_prefix import VisualPrefix

PREFIX_FILE = "vivid_prefix.safetensors"
PREFIX_CONFIG = "vivid_prefix.json"


class VIVIDOptions(StrictConfig):
    """``--set method.options.X=...`` for ``--method vivid``."""

    teacher: str | None = None            # None/"reportlm": offline report LM; "tiny": tiny HF LM; folder or hub name
    random_init: bool = False             # the "random-init frozen LM" control
    spd: bool = True                      # False: 4 learned image-independent prefix tokens ("A+UMS")
    groups: int = Field(4, ge=1)          # Q-Former proxy: groups=1, queries_per_group=8, lambda_ortho=0
    queries_per_group: int = Field(2, ge=1)
    num_heads: int | None = None          # None: 4 if the ViT width allows, else 2, else 1
    num_learned: int = Field(4, ge=1)
    prefix_dropout: float = Field(0.1, ge=0, lt=1)
    lambda_ortho: float = Field(0.01, ge=0)   # reference config of the headline checkpoint: 0.02
    target: Literal["ums", "free_text"] = "ums"
    answerability_mask: bool = True
    false_weight: float = Field(0.1, ge=0, le=1)
    keep_structural_tokens: bool = True
    scope: Literal["findings_only", "all"] = "findings_only"
    field_query: bool = True
    k_min: int = Field(4, ge=1)
    k_max: int = Field(6, ge=1)
    focus_p: float = Field(0.6, ge=0, le=1)
    free_text_absent_drop: float = Field(0.5, ge=0, le=1)
    free_text_null_drop: float = Field(0.7, ge=0, le=1)
    max_text_length: int = Field(512, ge=16)
    vit_lr: float | None = None           # None: the run's lr (paper: ViT 2e-5, projector 1e-4)
    projector_lr: float | None = None


class VIVIDMethod(Method):
    """ViT + visual prefix trained through a frozen causal LM (interface A ``CausalLM``)."""

    def __init__(self, backbone: nn.Module, lm: nn.Module, opts: VIVIDOptions | None = None):
        super().__init__()
        opts = opts or VIVIDOptions()
        self.opts = opts
        self.backbone = backbone
        dim = int(backbone.feature_dim)
        heads = opts.num_heads or next(h for h in (4, 2, 1) if dim % h == 0)
        self.visual = VisualPrefix(dim, int(lm.hidden_size), spd=opts.spd, groups=opts.groups,
                                   queries_per_group=opts.queries_per_group, num_heads=heads,
                                   dropout=opts.prefix_dropout, num_learned=opts.num_learned)
        self.lm = lm
        self.freeze(self.lm)

    def prefix(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Visual prefix in LM space ``(B, P, H)`` and SPD attention ``(B, G, M, N)`` or None."""
        return visual_prefix(self.backbone, self.visual, images)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for key in ("image", "input_ids", "attention_mask", "labels", "weights"):
            if key not in batch:
                raise KeyError(f"VIVIDMethod: batch has no {key!r} (keys: {sorted(batch)})")
        prefix, attn = self.prefix(batch["image"])
        text = self.lm.embed(batch["input_ids"])
        embeds = torch.cat([prefix.to(text.dtype), text], dim=1)
        b, p = prefix.shape[:2]
        ones = torch.ones(b, p, dtype=batch["attention_mask"].dtype, device=prefix.device)
        mask = torch.cat([ones, batch["attention_mask"]], dim=1)
        logits = self.lm(embeds, mask)
        labels = torch.cat([torch.full((b, p), IGNORE_INDEX, dtype=torch.long, device=prefix.device),
                            batch["labels"]], dim=1)
        weights = torch.cat([torch.zeros(b, p, device=prefix.device), batch["weights"]], dim=1)
        tok = token_weighted_ce(logits, labels, weights)
        out = {"tok": tok.detach()}
        loss = tok
        if attn is not None:
            ortho = attention_orthogonality(attn)
            if self.opts.lambda_ortho > 0:
                loss = loss + self.opts.lambda_ortho * ortho
            out["ortho"] = ortho.detach()
            out["attn_entropy"] = attention_entropy(attn.detach()).mean()
        out["loss"] = loss
        return out

    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        groups = []
        for name, module, group_lr in (("vit", self.backbone, self.opts.vit_lr or lr),
                                       ("projector", self.visual, self.opts.projector_lr or lr)):
            for g in default_param_groups(module, group_lr, weight_decay):
                groups.append(dict(g, name=f"{name}_{g['name']}"))
        return groups

    def save_prefix(self, folder: Path, extra: dict | None = None) -> None:
        """SPD + projector weights beside the backbone (the LM is never written)."""
        from safetensors.torch import save_file

        state = {k: v.detach().cpu().contiguous() for k, v in self.visual.state_dict().items()}
        save_file(state, str(Path(folder) / PREFIX_FILE))
        meta = {"format": "medvlp-vivid-prefix-1", "visual_prefix": self.visual.config,
                "options": self.opts.model_dump(), "teacher": getattr(self.lm, "source", "?"),
                **(extra or {})}
        (Path(folder) / PREFIX_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")


def visual_prefix(backbone: nn.Module, visual: nn.Module, images: torch.Tensor):
    """All ViT tokens (a CNN's map flattened) through the SPD/projector: ``(prefix, attn or None)``."""
    feats = backbone.forward_features(images)
    tokens = feats.flatten(2).transpose(1, 2) if feats.ndim == 4 else feats
    return visual(tokens)


class VIVIDPrefixModel(nn.Module):
    """A trained VIVID backbone with its SPD/projector and no LM: what diagnostics need."""

    def __init__(self, backbone: nn.Module, visual: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.visual = visual

    def prefix(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return visual_prefix(self.backbone, self.visual, images)


def load_vivid_prefix_model(folder: str | Path) -> VIVIDPrefixModel:
    """Backbone + SPD/projector from a ``medvlp pretrain --method vivid`` model folder (eval mode)."""
    from safetensors.torch import load_file

    from medvlp.errors import DataError
    from medvlp.models import from_pretrained
    from medvlp.models.visual_prefix import VisualPrefix

    folder = Path(folder)
    cfg_path = folder / PREFIX_CONFIG
    if not cfg_path.is_file():
        raise DataError(cfg_path, "missing", "a VIVID model folder (written by medvlp pretrain --method vivid)")
    visual = VisualPrefix(**json.loads(cfg_path.read_text())["visual_prefix"])
    visual.load_state_dict(load_file(str(folder / PREFIX_FILE)))
    return VIVIDPrefixModel(from_pretrained(folder), visual).eval()


def load_teacher(opts: VIVIDOptions):
    """The frozen causal LM named by the options (interface A, ``models.causal_lm``)."""
    try:
        from medvlp.models.causal_lm import load_causal_lm, tiny_causal_lm
    except ModuleNotFoundError as e:  # pragma: no cover - only while the LM module is missing
        raise ConfigError(f"VIVID needs medvlp.models.causal_lm (the frozen teacher LM): {e}") from e
    if opts.teacher == "tiny":
        return tiny_causal_lm()
    return load_causal_lm(None if opts.teacher in (None, "reportlm") else opts.teacher,
                          random_init=opts.random_init)


def build(ctx: BuildContext) -> MethodBuild:
    """``--method vivid``: UMS targets compiled from the pretraining set's labels."""
    from medvlp.methods.vivid_targets import VIVIDDataset, collate, records_for_imageset

    opts = VIVIDOptions.model_validate(ctx.options)
    if opts.k_min > opts.k_max:
        raise ConfigError(f"vivid: k_min={opts.k_min} > k_max={opts.k_max}")
    lm = load_teacher(opts)
    records = records_for_imageset(ctx.train_set)
    dataset = VIVIDDataset(
        ctx.train_set, records, ctx.transform, lm.tokenizer, target=opts.target,
        field_query=opts.field_query, k_range=(opts.k_min, opts.k_max), focus_p=opts.focus_p,
        false_weight=opts.false_weight, answerability_mask=opts.answerability_mask,
        keep_structural_tokens=opts.keep_structural_tokens, scope=opts.scope,
        max_text_length=opts.max_text_length,
        free_text_drop=(opts.free_text_absent_drop, opts.free_text_null_drop))
    method = VIVIDMethod(ctx.backbone, lm, opts)
    pad = lm.tokenizer.pad_token_id
    teacher = getattr(lm, "source", str(opts.teacher))
    parts = {"teacher_lm": teacher + (" [random init, frozen]" if opts.random_init and "random" not in teacher
                                      else ""),
             "targets": ("UMS JSON compiled from labels" if opts.target == "ums"
                         else "free text rendered from labels (no real reports)")}
    return MethodBuild(method, dataset, collate_fn=functools.partial(collate, pad_id=pad), parts_used=parts,
                       metadata={"vivid": opts.model_dump(), "ums_source": records[0].provenance.source
                                 if records else None},
                       save_extra=lambda folder: method.save_prefix(folder))
