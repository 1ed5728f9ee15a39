"""M-FLAG (Liu et al., MICCAI 2023): vision-language pretraining with a frozen text encoder and a
latent-geometry (orthogonality) regulariser. METHODS.md §5.

    h   = backbone.pooled(image)                    (B, D)  ResNet/ViT pooled features
    z_v = BN₀(proj_v(h))                            (B, E)  Linear-BN-ReLU-Linear, then BN(affine=False)
    e_t = text_encoder(report)                      (B, T)  frozen, eval, no grad (CLS or mean pooled)
    z_t = BN₀(proj_t(e_t))                          (B, E)
    L   = L_align(z_v, z_t) + w_orth · L_orth(h)

``L_align`` is :func:`~medvlp.losses.alignment.cosine_alignment` (the term once; the authors'
doubled term with ``alignment_doubled``); ``L_orth`` is
:func:`~medvlp.losses.feature_decorrelation.feature_decorrelation` with the authors' code preset
(un-normalised, un-centred ``XᵀX / B_cfg``, off-diagonal weight 0.0051, ½) or our reading of the
paper (``orth_variant="paper"``), on the un-projected image features as in the code
(``orth_on="backbone"``) or on ``z_v``.

Choices (documented in docs/mflag.md):

- Default ``orth_variant="code"``: it is the only formula read from a source (the paper text was
  not available, METHODS.md 5.6.1); the paper reading is a switch.
- ``batch_size_cfg`` (B_cfg) defaults to the actual batch, which equals the authors' setting when
  the run's batch is the configured one.
- Rank (METHODS.md 5.5): ``C`` has rank ≤ B, so with D > B the off-diagonal term has a positive
  floor. The first training step warns with the numbers (``rank_check="error"`` refuses) and says
  the remedies: a batch ≥ D, ``orth_on="projection"`` with ``embed_dim`` ≤ B, or accepting it.
- The text encoder runs in the loop, under ``no_grad`` (as in the authors' code: nothing upstream
  of it trains). Its embeddings are cached per unique sentence: the encoder is frozen and in eval
  mode, so a cached embedding equals a recomputed one, and label-derived texts are re-drawn every
  epoch, so the wording is never frozen.
- Text: real reports when the image set carries them (``meta[report_column]``, or the column of
  the CSV manifest the set was read from), else sentences rendered from the labels' UMS records
  with a fresh draw per sample and epoch (:func:`~medvlp.knowledge.report_text.render_report`);
  outputs then say the text is label-derived.
"""
from __future__ import annotations

import copy
import math
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, ValidationError
from torch import nn
from torch.utils.data import Dataset

from medvlp.config import StrictConfig
from medvlp.errors import ConfigError, DataError
from medvlp.knowledge.report_text import LABEL_DERIVED_NOTE, render_report
from medvlp.losses.alignment import cosine_alignment
from medvlp.losses.feature_decorrelation import MFLAG_CODE, MFLAG_PAPER, feature_decorrelation
from medvlp.methods.base import Method
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models.heads import MLPProjector


class MFlagOptions(StrictConfig):
    """``--set method.options.<name>=...`` for ``--method mflag``."""

    text_encoder: str | None = "minilm"      # 'minilm' (offline), a folder, or a hub name
    pooling: Literal["cls", "mean"] | None = None  # None: the encoder's own (MiniLM mean, others CLS)
    max_text_length: int = Field(128, ge=8)
    hidden_dim: int = Field(256, ge=1)       # paper 2048; scaled down (METHODS.md 5.5)
    embed_dim: int = Field(128, ge=1)        # paper 1024
    projector_norm: Literal["bn", "bn_noaffine", "ln", "none"] = "bn"
    output_norm: Literal["bn_noaffine", "none"] = "bn_noaffine"  # the code's final BN(affine=False)
    text_projector: bool = True
    alignment_doubled: bool = False          # the authors' code: the cosine term twice
    orth_variant: Literal["code", "paper"] = "code"
    orth_on: Literal["backbone", "projection"] = "backbone"
    orth_weight: float = Field(1.0, ge=0)
    batch_size_cfg: int | None = Field(None, ge=1)  # B_cfg; None: the actual batch
    off_diag_weight: float | None = Field(None, ge=0)  # None: the variant's (0.0051 code, 1 paper)
    center: bool = False
    standardize: bool = False
    rank_check: Literal["warn", "error", "off"] = "warn"
    text_source: Literal["auto", "reports", "labels"] = "auto"
    report_column: str = "report"
    absent_drop_p: float = Field(0.0, ge=0, le=1)
    null_drop_p: float = Field(1.0, ge=0, le=1)
    text_cache_size: int = Field(200_000, ge=0)  # 0: no cache


class MFlagMethod(Method):
    """Backbone + projectors + frozen text encoder; ``forward(batch)`` with ``image`` and ``text``."""

    def __init__(self, backbone: nn.Module, text_encoder: nn.Module, opts: MFlagOptions | None = None):
        super().__init__()
        self.opts = opts = opts or MFlagOptions()
        self.backbone = backbone
        self.text_encoder = text_encoder
        self.freeze(self.text_encoder)
        d, t, e = int(backbone.feature_dim), int(text_encoder.dim), opts.embed_dim
        self.image_projector_kwargs = {"in_dim": d, "hidden_dim": opts.hidden_dim, "out_dim": e,
                                       "num_layers": 2, "norm": opts.projector_norm, "act": "relu"}
        self.image_projector = MLPProjector(**self.image_projector_kwargs)
        self.image_out_norm = _out_norm(opts.output_norm, e)
        if opts.text_projector:
            self.text_projector_kwargs: dict[str, Any] | None = dict(self.image_projector_kwargs, in_dim=t)
            self.text_projector: nn.Module | None = MLPProjector(**self.text_projector_kwargs)
            self.text_out_norm = _out_norm(opts.output_norm, e)
        else:
            if e != t:
                raise ConfigError(f"mflag: text_projector=false needs embed_dim == text encoder dim ({t}), "
                                  f"got embed_dim={e}")
            self.text_projector_kwargs, self.text_projector, self.text_out_norm = None, None, nn.Identity()
        preset = MFLAG_CODE if opts.orth_variant == "code" else MFLAG_PAPER
        self.orth_kwargs = dict(preset, center=opts.center, standardize=opts.standardize)
        if opts.off_diag_weight is not None:
            self.orth_kwargs["off_diag_weight"] = opts.off_diag_weight
        if opts.standardize and self.orth_kwargs["l2_normalize"]:
            raise ConfigError("mflag: standardize=true does not combine with orth_variant='paper' "
                              "(which L2-normalises the features); pick one")
        self._cache: dict[str, torch.Tensor] = {}
        self._rank_checked = False

    # -- text ------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Frozen text embeddings ``(B, T)``, cached per unique sentence (exact: eval, no grad)."""
        if self.opts.text_cache_size == 0:
            return self.text_encoder(list(texts)).float()
        new = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if new:
            if len(self._cache) + len(new) > self.opts.text_cache_size:
                self._cache.clear()
            for t, emb in zip(new, self.text_encoder(new).float().cpu()):
                self._cache[t] = emb
        return torch.stack([self._cache[t] for t in texts]).to(self.text_encoder.device)

    def project_text(self, emb: torch.Tensor) -> torch.Tensor:
        return emb if self.text_projector is None else self.text_out_norm(self.text_projector(emb))

    def project_image(self, feats: torch.Tensor) -> torch.Tensor:
        return self.image_out_norm(self.image_projector(feats))

    # -- loss ------------------------------------------------------------------------------------
    def forward(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        for key in ("image", "text"):
            if key not in batch:
                raise KeyError(f"MFlagMethod: batch has no {key!r} (keys: {sorted(batch)})")
        feats = self.backbone.pooled(batch["image"])
        z_v = self.project_image(feats)
        z_t = self.project_text(self.encode_text(batch["text"]).to(z_v.device))
        align = cosine_alignment(z_v, z_t, doubled=self.opts.alignment_doubled)
        x = feats if self.opts.orth_on == "backbone" else z_v
        if self.training:
            self._check_rank(x)
        orth = feature_decorrelation(x, divisor=self.opts.batch_size_cfg, **self.orth_kwargs)
        loss = align + self.opts.orth_weight * orth
        cos = torch.nn.functional.cosine_similarity(z_v.detach().float(), z_t.detach().float(), dim=-1).mean()
        return {"loss": loss, "align": align.detach(), "orth": orth.detach(), "cos": cos}

    def _check_rank(self, x: torch.Tensor) -> None:
        if self._rank_checked or self.opts.rank_check == "off":
            return
        self._rank_checked = True
        b, d = x.shape
        if d <= b or self.orth_kwargs["off_diag_weight"] == 0:
            return
        msg = (f"mflag: the orthogonality loss acts on {d}-d features with batch {b}: XᵀX has rank <= {b} < {d}, "
               f"so it cannot reach the identity and its off-diagonal term has a positive floor (METHODS.md 5.5). "
               f"Remedies: batch >= {d}; orth_on='projection' with embed_dim <= {b}; or accept it as a deviation.")
        if self.opts.rank_check == "error":
            raise ConfigError(msg)
        warnings.warn(msg, stacklevel=2)

    # -- state outside the trainable state ---------------------------------------------------------
    def extra_state(self) -> dict[str, torch.Tensor]:
        """Running statistics of affine-free BatchNorms (the output norms; hidden ones with
        ``projector_norm='bn_noaffine'``): they change in training but own no parameter, so the
        trainable state leaves them out; checkpoints carry them here."""
        state = {}
        for prefix, mod in self.named_modules():
            if prefix.startswith("text_encoder") or any(True for _ in mod.parameters(recurse=False)):
                continue
            for bname, buf in mod.named_buffers(recurse=False):
                if buf is not None and bname not in mod._non_persistent_buffers_set:
                    state[f"{prefix}.{bname}"] = buf.detach().clone()
        return state

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        own = dict(self.named_buffers())
        with torch.no_grad():
            for key, value in state.items():
                if key not in own:
                    raise DataError(None, f"extra state {key!r} does not belong to this M-FLAG method",
                                    f"keys {sorted(self.extra_state())}")
                own[key].copy_(value)

    # -- saving ----------------------------------------------------------------------------------
    def save_dual_encoder(self, folder: str | Path) -> None:
        """Interface C: projectors (with the output BN folded into the last Linear) + text encoder name."""
        from medvlp.models.dual_encoder import save_dual_encoder_files

        txt = None
        if self.text_projector is not None:
            txt = _fold_out_norm(self.text_projector, self.text_out_norm, self.text_projector_kwargs)
        save_dual_encoder_files(
            folder, text_encoder=self.opts.text_encoder or "minilm", pooling=self.text_encoder.pooling,
            embed_dim=self.opts.embed_dim,
            image_projector=_fold_out_norm(self.image_projector, self.image_out_norm, self.image_projector_kwargs),
            image_projector_kwargs=self.image_projector_kwargs, text_projector=txt,
            text_projector_kwargs=self.text_projector_kwargs)


def _out_norm(kind: str, dim: int) -> nn.Module:
    return nn.BatchNorm1d(dim, affine=False) if kind == "bn_noaffine" else nn.Identity()


def _fold_out_norm(proj: MLPProjector, norm: nn.Module, kwargs: dict[str, Any]) -> MLPProjector:
    """An MLPProjector equal (in eval mode) to ``norm(proj(x))``: the output BN's running statistics
    folded into the last Linear, so the saved files stay plain MLPProjector kwargs (interface C)."""
    out = MLPProjector(**kwargs)
    out.load_state_dict(copy.deepcopy(proj.state_dict()))
    if isinstance(norm, nn.BatchNorm1d):
        last = out.net[-1]
        with torch.no_grad():
            s = torch.sqrt(norm.running_var + norm.eps)
            last.weight.div_(s[:, None])
            last.bias.sub_(norm.running_mean).div_(s)
    return out.eval()


# ------------------------------------------------------------------------------------------------
# data


class MFlagDataset(Dataset):
    """``{"image", "text", "index"}``: a real report, or label-derived text re-drawn on every access.

    Draws use a numpy Generator seeded from torch's global RNG, which the engine seeds and
    checkpoints, so runs and resumes are reproducible while each epoch gets fresh wording.
    """

    def __init__(self, imageset, transform, *, reports: list[str] | None = None, records=None,
                 absent_drop_p: float = 0.0, null_drop_p: float = 1.0):
        if (reports is None) == (records is None):
            raise ValueError("MFlagDataset: give reports or records, exactly one")
        n = len(reports if reports is not None else records)
        if n != len(imageset):
            raise DataError(imageset.source, f"{n} texts for {len(imageset)} images", "one text per image")
        self.imageset, self.transform = imageset, transform
        self.reports, self.records = reports, records
        self.drop = {"absent_drop_p": absent_drop_p, "null_drop_p": null_drop_p}

    def __len__(self) -> int:
        return len(self.imageset)

    def text_for(self, i: int, rng: np.random.Generator) -> str:
        if self.reports is not None:
            return self.reports[i]
        return render_report(self.records[i], rng, **self.drop)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        return {"image": self.transform(self.imageset.images[i]), "text": self.text_for(i, rng), "index": int(i)}


def report_texts(ds, column: str) -> list[str] | None:
    """The real report of every image of ``ds``, or None when the set has none.

    Looked up in ``ds.meta[column]`` (per image, or per row of the parent set via
    ``meta["parent_indices"]``), else in that column of the CSV manifest ``ds.source`` (rows matched
    on the image paths the manifest reader keeps in ``meta["paths"]``). Empty reports are an error.
    """
    values = _per_image(ds, column)
    source = f"meta[{column!r}] of {ds.name}"
    if values is None:
        values = _from_manifest(ds, column)
        source = f"column {column!r} of {ds.source}"
    if values is None:
        return None
    texts = ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v).strip() for v in values]
    empty = [i for i, t in enumerate(texts) if not t]
    if empty:
        raise DataError(ds.source, f"{len(empty)} of {len(texts)} images have an empty report in {source} "
                        f"(first rows {empty[:5]})", "a report for every pretraining image (drop those rows, "
                        "or set method.options.text_source=labels)", record=column)
    return texts


def _per_image(ds, key: str):
    values = ds.meta.get(key)
    if values is None:
        return None
    values = np.asarray(values, dtype=object)
    if len(values) == len(ds):
        return values
    idx = ds.meta.get("parent_indices")
    if idx is not None and len(idx) == len(ds) and len(values) > int(np.max(idx, initial=-1)):
        return values[np.asarray(idx)]
    return None


def _from_manifest(ds, column: str):
    src = Path(str(ds.source or ""))
    paths = _per_image(ds, "paths")
    if src.suffix.lower() != ".csv" or not src.is_file() or paths is None:
        return None
    import pandas as pd

    df = pd.read_csv(src)
    if column not in df.columns:
        return None
    wanted = [str(p) for p in paths]
    for col in df.columns:
        keys = df[col].astype(str)
        if set(wanted) <= set(keys):
            lookup = dict(zip(keys, df[column]))
            return [lookup[p] for p in wanted]
    raise DataError(src, f"cannot match the images to rows for column {column!r}",
                    "an image-path column holding the paths the manifest reader kept")


# ------------------------------------------------------------------------------------------------
# build


def parse_options(options: dict[str, Any]) -> MFlagOptions:
    try:
        return MFlagOptions.model_validate(options)
    except ValidationError as e:
        first = e.errors()[0]
        raise ConfigError(f"method.options for mflag: {'.'.join(map(str, first['loc']))}: {first['msg']} "
                          f"(known options: {', '.join(MFlagOptions.model_fields)})") from e


def build(ctx: BuildContext) -> MethodBuild:
    """``--method mflag``: text from the set's reports, else rendered from its labels."""
    from medvlp.models.text import OFFLINE_TEXT_ENCODER, PAPER_TEXT_ENCODER, load_text_encoder

    opts = parse_options(ctx.options)
    ds = ctx.train_set
    reports = None if opts.text_source == "labels" else report_texts(ds, opts.report_column)
    if reports is None and opts.text_source == "reports":
        raise DataError(ds.source, f"no report column {opts.report_column!r} in the image set's metadata or "
                        "CSV manifest", "a report per image (or text_source=labels / auto)")
    if reports is not None:
        dataset = MFlagDataset(ds, ctx.transform, reports=reports)
        text_note = f"real reports ({opts.report_column!r} of {ds.source})"
    else:
        from medvlp.methods.vivid_targets import records_for_imageset

        records = records_for_imageset(ds)
        dataset = MFlagDataset(ds, ctx.transform, records=records, absent_drop_p=opts.absent_drop_p,
                               null_drop_p=opts.null_drop_p)
        text_note = f"{LABEL_DERIVED_NOTE}: UMS records of {ds.name}'s labels, re-worded every epoch"
    text_encoder = load_text_encoder(opts.text_encoder, pooling=opts.pooling, max_length=opts.max_text_length)
    method = MFlagMethod(ctx.backbone, text_encoder, opts)
    enc_note = f"{text_encoder.source} (frozen, {text_encoder.pooling} pooling)"
    if opts.text_encoder in (None, OFFLINE_TEXT_ENCODER):
        enc_note += f"; offline substitute for the paper's {PAPER_TEXT_ENCODER}"
    parts = {"text_encoder": enc_note, "text": text_note}
    metadata = {"mflag": opts.model_dump(), "text_label_derived": reports is None,
                "orthogonality": {"variant": opts.orth_variant, "on": opts.orth_on,
                                  "feature_dim": int(ctx.backbone.feature_dim if opts.orth_on == "backbone"
                                                     else opts.embed_dim), **method.orth_kwargs}}
    return MethodBuild(method, dataset, parts_used=parts, metadata=metadata,
                       save_extra=method.save_dual_encoder)
