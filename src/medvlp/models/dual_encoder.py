"""A frozen CLIP-style dual encoder with embedding-level access to its text side (for ViP / CoOp).

``load_dual_encoder(spec)`` takes

- ``"medvlp:<folder>"``: a medvlp model folder with the dual-encoder files of interface C (written
  by ``medvlp pretrain --method mflag`` or :func:`save_dual_encoder_files`): the saved backbone's
  pooled features -> image projector; a frozen Hugging Face text encoder (offline MiniLM by
  default) -> optional text projector;
- ``"open_clip:<name>[@<pretrained tag>]"`` or ``"open_clip:<folder>"``: OpenAI CLIP
  (``open_clip:ViT-B-16@openai``), BiomedCLIP
  (``open_clip:hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) or a local
  open_clip folder; needs the ``[clip]`` extra and the weights in the local cache (or network);
- ``"hf-clip:<name|folder>"``: a transformers ``CLIPModel`` with its tokenizer.

(The two CLIP backends live in :mod:`medvlp.models.clip_backends`.)

Every backend is frozen (no parameter requires grad, always eval) but never run under
``no_grad`` inside :meth:`DualEncoder.encode_text_embeds`, so gradients reach prompt vectors spliced
into the token embeddings. The logit scale is fixed at 100 (temperature 1/100), CLIP's value that
ViP keeps frozen.

Prompt layout (:meth:`TextSide.layout`): each text ``t`` becomes
``[lead specials] A·ctx <tokens of t> B·ctx <tokens of "."> [trail specials] [pad...]`` with
``A + B = n_ctx`` context slots whose embeddings a prompt module overwrites; ``position`` is where
the *text* sits, as CoOp's ``CLASS_TOKEN_POSITION``: ``"end"`` (A = n_ctx: "X X X X text."),
``"front"`` (B = n_ctx: "text X X X X.") or ``"middle"`` (A = n_ctx // 2).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medvlp.errors import ConfigError, DataError

Position = Literal["end", "middle", "front"]
LOGIT_SCALE = 100.0
DUAL_ENCODER_FORMAT = "medvlp-dual-encoder-1"
DUAL_ENCODER_JSON = "dual_encoder.json"
DUAL_ENCODER_WEIGHTS = "dual_encoder.safetensors"


@dataclass
class TokenLayout:
    """Token ids of N texts with context slots: ``input_ids``/``attention_mask`` ``(N, L)``,
    ``ctx_index`` ``(N, n_ctx)`` the positions of the slots in each row."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    ctx_index: torch.Tensor


class TextSide(nn.Module):
    """A frozen text tower: tokenizer pieces, token-embedding lookup and ``encode_embeds``.

    Subclasses set ``lead_ids``/``trail_ids`` (special tokens around the text), ``pad_id``,
    ``max_length`` and ``pad_to`` (a fixed length, or None to pad to the longest), and implement
    ``content_ids``, ``token_embeddings`` and ``encode_embeds``.
    """

    lead_ids: list[int]
    trail_ids: list[int]
    pad_id: int
    max_length: int
    pad_to: int | None = None
    source: str = ""

    def content_ids(self, text: str) -> list[int]:
        raise NotImplementedError

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def encode_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                      input_ids: torch.Tensor) -> torch.Tensor:
        """``(N, L, W)`` embeddings -> ``(N, D)`` joint-space features (not normalised)."""
        raise NotImplementedError

    def train(self, mode: bool = True) -> TextSide:
        return super().train(False)

    def derive_specials(self, full_ids: list[int], text: str = "a") -> None:
        """Lead/trail special tokens: whatever the tokenizer puts around ``text``'s own tokens."""
        content = self.content_ids(text)
        for i in range(len(full_ids) - len(content) + 1):
            if full_ids[i:i + len(content)] == content:
                self.lead_ids = list(full_ids[:i])
                self.trail_ids = [t for t in full_ids[i + len(content):] if t != self.pad_id]
                return
        raise ConfigError(f"{self.source}: cannot locate the tokens of {text!r} in {full_ids}")

    def layout(self, texts: list[str], n_ctx: int = 0, position: Position = "end") -> TokenLayout:
        """Token ids of ``texts`` with ``n_ctx`` context slots placed per ``position``."""
        if position not in ("end", "middle", "front"):
            raise ConfigError(f"prompt position={position!r}: expected 'end', 'middle' or 'front'")
        before = {"end": n_ctx, "front": 0, "middle": n_ctx // 2}[position]
        after = n_ctx - before
        period = self.content_ids(".")
        budget = self.max_length - len(self.lead_ids) - len(self.trail_ids) - len(period) - n_ctx
        if budget < 1:
            raise ConfigError(f"{self.source}: n_ctx={n_ctx} leaves no room for text in "
                              f"{self.max_length} tokens")
        rows, slots = [], []
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text #{i} is empty: every prompt needs words")
            words = self.content_ids(t.strip().rstrip("."))[:budget]  # CLIP truncates too
            start = len(self.lead_ids)
            rows.append(self.lead_ids + [self.pad_id] * before + words + [self.pad_id] * after
                        + period + self.trail_ids)
            slots.append(list(range(start, start + before))
                         + list(range(start + before + len(words), start + n_ctx + len(words))))
        length = self.pad_to or max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r)
            mask[i, :len(r)] = 1
        return TokenLayout(ids, mask, torch.tensor(slots, dtype=torch.long).reshape(len(rows), n_ctx))

    def encode_ids(self, layout: TokenLayout) -> torch.Tensor:
        dev = device_of(self)
        ids, mask = layout.input_ids.to(dev), layout.attention_mask.to(dev)
        return self.encode_embeds(self.token_embeddings(ids), mask, ids)


def device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


class EncoderTextSide(TextSide):
    """medvlp's :class:`~medvlp.models.text.TextEncoder` (BERT-like, CLS/mean pooling) + projector."""

    def __init__(self, encoder, projector: nn.Module | None = None):
        super().__init__()
        self.encoder = encoder
        self.projector = projector
        tok = encoder.tokenizer
        self.pad_id = int(tok.pad_token_id if tok.pad_token_id is not None else 0)
        self.max_length = int(encoder.max_length)
        self.source = encoder.source
        self.derive_specials(tok("a")["input_ids"])
        self.requires_grad_(False)
        self.eval()

    def content_ids(self, text: str) -> list[int]:
        return list(self.encoder.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder.token_embeddings(input_ids)

    def encode_embeds(self, inputs_embeds, attention_mask, input_ids):
        x = self.encoder.encode_embeds(inputs_embeds, attention_mask)
        return x if self.projector is None else self.projector(x)


class MedvlpImageSide(nn.Module):
    """A medvlp backbone's pooled features through the image projector."""

    def __init__(self, backbone, projector: nn.Module):
        super().__init__()
        self.backbone, self.projector = backbone, projector

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projector(self.backbone.pooled(x))


class DualEncoder(nn.Module):
    """Frozen image and text towers into one normalised joint space, logit scale fixed at 100."""

    def __init__(self, image_encoder: nn.Module, text: TextSide, preprocess: dict[str, Any], *,
                 source: str, parts_used: dict[str, str] | None = None,
                 logit_scale: float = LOGIT_SCALE):
        super().__init__()
        self.image_encoder = image_encoder
        self.text = text
        self.preprocess = dict(preprocess)
        self.source = source
        self.parts_used = dict(parts_used or {})
        self.logit_scale = float(logit_scale)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> DualEncoder:
        return super().train(False)  # frozen means frozen: BN statistics and dropout fixed

    @property
    def device(self) -> torch.device:
        return device_of(self)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` prepared per ``preprocess`` -> ``(B, D)`` L2-normalised."""
        return F.normalize(self.image_encoder(images.to(self.device)).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """Plain texts (``"text."``) -> ``(N, D)`` L2-normalised."""
        return F.normalize(self.text.encode_ids(self.text.layout(list(texts))).float(), dim=-1)

    def text_layout(self, texts: list[str], n_ctx: int = 0, position: Position = "end") -> TokenLayout:
        return self.text.layout(list(texts), n_ctx, position)

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.text.token_embeddings(input_ids.to(self.device))

    def encode_text_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor,
                           input_ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings (e.g. with context vectors spliced in) -> ``(N, D)`` normalised;
        differentiable w.r.t. ``inputs_embeds``."""
        dev = self.device
        out = self.text.encode_embeds(inputs_embeds, attention_mask.to(dev), input_ids.to(dev))
        return F.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def image_features(self, imageset, *, batch_size: int = 256) -> np.ndarray:
        """Normalised image embeddings ``(N, D)`` of every image, in order (frozen, so cacheable)."""
        from medvlp.data.transforms import Preprocess

        prep = Preprocess.from_dict(self.preprocess)
        out = []
        for i in range(0, len(imageset), batch_size):
            x = torch.stack([prep(img) for img in imageset.images[i:i + batch_size]])
            out.append(self.encode_image(x).cpu().numpy())
        return np.concatenate(out) if out else np.empty((0, 0), np.float32)


# ---------------------------------------------------------------------------------------------
# Loading


def load_dual_encoder(spec: str, *, device: str | torch.device = "cpu") -> DualEncoder:
    """``medvlp:<folder>``, ``open_clip:<name[@tag]|folder>`` or ``hf-clip:<name|folder>``."""
    kind, _, arg = str(spec).partition(":")
    if not arg:
        raise ConfigError(f"dual encoder {spec!r}: expected 'medvlp:<folder>', "
                          "'open_clip:<name[@pretrained]|folder>' or 'hf-clip:<name|folder>'")
    from medvlp.models import clip_backends

    if kind == "medvlp":
        enc = load_medvlp_dual_encoder(arg)
    elif kind == "open_clip":
        enc = clip_backends.load_open_clip(arg)
    elif kind == "hf-clip":
        enc = clip_backends.load_hf_clip(arg)
    else:
        raise ConfigError(f"dual encoder {spec!r}: unknown backend {kind!r} (medvlp, open_clip, hf-clip)")
    return enc.to(device)


def save_dual_encoder_files(folder: str | Path, *, text_encoder: str, pooling: str, embed_dim: int,
                            image_projector: nn.Module, image_projector_kwargs: dict[str, Any],
                            text_projector: nn.Module | None = None,
                            text_projector_kwargs: dict[str, Any] | None = None) -> None:
    """Write interface C (``dual_encoder.json`` + ``dual_encoder.safetensors``) into a model folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    meta = {"format": DUAL_ENCODER_FORMAT, "text_encoder": text_encoder, "pooling": pooling,
            "embed_dim": int(embed_dim), "image_projector": dict(image_projector_kwargs),
            "text_projector": dict(text_projector_kwargs) if text_projector is not None else None,
            "image_features": "pooled"}
    tensors = {f"image_projector.{k}": v.detach().cpu().contiguous().clone()
               for k, v in image_projector.state_dict().items()}
    if text_projector is not None:
        tensors.update({f"text_projector.{k}": v.detach().cpu().contiguous().clone()
                        for k, v in text_projector.state_dict().items()})
    save_file(tensors, str(folder / DUAL_ENCODER_WEIGHTS))
    (folder / DUAL_ENCODER_JSON).write_text(json.dumps(meta, indent=2) + "\n")


def load_medvlp_dual_encoder(folder: str | Path, *, text_encoder=None) -> DualEncoder:
    """Rebuild a medvlp dual encoder from a model folder (interface C). ``text_encoder``: an
    already-built :class:`TextEncoder` to use instead of loading the one the folder names (tests)."""
    from safetensors.torch import load_file

    from medvlp.models.heads import MLPProjector
    from medvlp.models.hub import from_pretrained
    from medvlp.models.text import load_text_encoder

    folder = Path(folder)
    meta_path, w_path = folder / DUAL_ENCODER_JSON, folder / DUAL_ENCODER_WEIGHTS
    if not meta_path.is_file():
        raise DataError(meta_path, "missing", "the dual-encoder description written by "
                        "'medvlp pretrain --method mflag' (a model folder with a text side)")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(meta_path, f"not valid JSON ({e})", "a dual-encoder description") from e
    for key in ("format", "text_encoder", "pooling", "embed_dim", "image_projector"):
        if key not in meta:
            raise DataError(meta_path, f"no field {key!r}", f"format {DUAL_ENCODER_FORMAT}", record=key)
    if meta["format"] != DUAL_ENCODER_FORMAT:
        raise DataError(meta_path, f"format {meta['format']!r}", DUAL_ENCODER_FORMAT, record="format")
    if meta.get("image_features", "pooled") != "pooled":
        raise DataError(meta_path, f"image_features={meta['image_features']!r}", "'pooled'",
                        record="image_features")
    if not w_path.is_file():
        raise DataError(w_path, "missing", "the projector weights (safetensors)")
    state = load_file(str(w_path))
    backbone = from_pretrained(folder)

    def projector(key: str) -> nn.Module | None:
        kw = meta.get(key)
        if kw is None:
            return None
        try:
            proj = MLPProjector(**kw)
        except TypeError as e:
            raise DataError(meta_path, f"bad projector arguments ({e})", "MLPProjector kwargs", record=key) from e
        sub = {k[len(key) + 1:]: v for k, v in state.items() if k.startswith(key + ".")}
        try:
            proj.load_state_dict(sub, strict=True)
        except RuntimeError as e:
            raise DataError(w_path, f"{key} weights do not fit ({e})", "tensors of the described projector") from e
        return proj.eval()

    img_proj, txt_proj = projector("image_projector"), projector("text_projector")
    text = text_encoder or load_text_encoder(meta["text_encoder"], pooling=meta["pooling"])
    dim = txt_proj.out_dim if txt_proj is not None else text.dim
    if img_proj.out_dim != dim or dim != int(meta["embed_dim"]):
        raise DataError(meta_path, f"image side gives {img_proj.out_dim}-d, text side {dim}-d, "
                        f"embed_dim says {meta['embed_dim']}", "one joint dimension")
    bmeta = backbone.metadata
    parts = {"dual_encoder": f"medvlp:{folder}",
             "image_side": f"{backbone.config.get('name')} pretrained by medvlp "
                           f"({bmeta.get('method', '?')} on {bmeta.get('pretrain_data', {}).get('dataset', '?')})",
             "text_side": f"{text.source} (frozen)"}
    return DualEncoder(MedvlpImageSide(backbone, img_proj), EncoderTextSide(text, txt_proj),
                       backbone.preprocess, source=f"medvlp:{folder}", parts_used=parts)


# ---------------------------------------------------------------------------------------------
# Tiny dual encoders built from configs (tests and examples: the mechanics, not the quality)


def tiny_dual_encoder(backend: str = "medvlp", *, folder: str | Path | None = None, seed: int = 0,
                      embed_dim: int = 32) -> DualEncoder:
    """A randomly initialised dual encoder of each backend, small enough for a unit test.

    ``"medvlp"``: vit_tiny_p4_28 + MLP projector and a 2-layer BERT (MiniLM's tokenizer) + linear
    projector, written to ``folder`` as a model folder (interface C) and loaded back from it;
    ``"hf-clip"``: a transformers ``CLIPModel`` from a tiny ``CLIPConfig`` (MiniLM's tokenizer);
    ``"open_clip"``: an open_clip ``CLIP`` from a tiny config with its own BPE tokenizer.
    """
    torch.manual_seed(seed)
    if backend == "medvlp":
        return _tiny_medvlp(folder, embed_dim)
    if backend in ("hf-clip", "open_clip"):
        from medvlp.models.clip_backends import tiny_clip

        return tiny_clip(backend, embed_dim)
    raise ConfigError(f"tiny_dual_encoder: unknown backend {backend!r} (medvlp, hf-clip, open_clip)")


def _tiny_medvlp(folder: str | Path | None, embed_dim: int) -> DualEncoder:
    from transformers import AutoTokenizer, BertConfig, BertModel

    from medvlp.models.factory import create_model
    from medvlp.models.heads import MLPProjector
    from medvlp.models.hub import save_pretrained
    from medvlp.models.text import minilm_folder

    if folder is None:
        raise ConfigError("tiny_dual_encoder('medvlp') needs a folder to write the model to")
    folder = Path(folder)
    backbone = create_model("vit_tiny_p4_28", pretrained=False, in_chans=1)
    save_pretrained(backbone, folder, metadata={"method": "random init (test)",
                                                "pretrain_data": {"dataset": "none"}})
    tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
    bert = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                num_attention_heads=2, intermediate_size=64))
    bert.save_pretrained(str(folder / "text_encoder"))
    tok.save_pretrained(str(folder / "text_encoder"))
    img_kw = dict(in_dim=backbone.feature_dim, hidden_dim=64, out_dim=embed_dim, num_layers=2, norm="bn")
    txt_kw = dict(in_dim=32, hidden_dim=32, out_dim=embed_dim, num_layers=1, norm="none")
    img_proj, txt_proj = MLPProjector(**img_kw).eval(), MLPProjector(**txt_kw).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a load that drops them shows
        img_proj.net[1].running_mean.normal_()
        img_proj.net[1].running_var.uniform_(0.5, 2.0)
    save_dual_encoder_files(folder, text_encoder=str(folder / "text_encoder"), pooling="mean",
                            embed_dim=embed_dim, image_projector=img_proj, image_projector_kwargs=img_kw,
                            text_projector=txt_proj, text_projector_kwargs=txt_kw)
    return load_medvlp_dual_encoder(folder)
