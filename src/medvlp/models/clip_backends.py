"""CLIP backends of :class:`~medvlp.models.dual_encoder.DualEncoder`: transformers ``CLIPModel``
(``hf-clip:``) and open_clip models (``open_clip:``; OpenAI CLIP, BiomedCLIP), each with its text
tower re-run from token embeddings so prompt vectors can be spliced in.

The text forward passes below re-implement the libraries' own ``get_text_features`` /
``encode_text`` from ``inputs_embeds`` (neither accepts embeddings); tests check them against the
libraries' outputs on tiny random configs.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medvlp.errors import ConfigError
from medvlp.models.dual_encoder import DualEncoder, TextSide

# OpenAI CLIP's pixel statistics (transformers' CLIPImageProcessor defaults).
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


class HFClipTextSide(TextSide):
    """The text tower of a transformers ``CLIPModel``: causal transformer, EOT pooling, projection."""

    def __init__(self, clip, tokenizer, source: str = "hf-clip"):
        super().__init__()
        self.clip = clip
        self.tokenizer = tokenizer
        self.source = source
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        self.max_length = int(clip.config.text_config.max_position_embeddings)
        self.derive_specials(tokenizer("a")["input_ids"])
        self.requires_grad_(False)
        self.eval()

    def content_ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def token_embeddings(self, input_ids):
        return self.clip.text_model.embeddings.token_embedding(input_ids)

    def encode_embeds(self, inputs_embeds, attention_mask, input_ids):
        from transformers.masking_utils import create_causal_mask

        tm = self.clip.text_model
        hidden = tm.embeddings(inputs_embeds=inputs_embeds)
        mask = create_causal_mask(config=tm.config, inputs_embeds=hidden, attention_mask=attention_mask,
                                  past_key_values=None)
        hidden = tm.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
        hidden = tm.final_layer_norm(hidden)
        # The EOT token is the last attended one (the layout always ends a text with it).
        eot = attention_mask.sum(1) - 1
        return self.clip.text_projection(hidden[torch.arange(len(hidden), device=hidden.device), eot])


class OpenClipTextSide(TextSide):
    """The text tower of an open_clip model: built-in CLIP transformer or an HF text encoder
    (BiomedCLIP's PubMedBERT)."""

    def __init__(self, model, tokenizer, source: str = "open_clip"):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.hf = hasattr(model, "text") and hasattr(model.text, "transformer")
        if self.hf:
            self.pad_id = int(model.text.config.pad_token_id or 0)
        else:
            self.pad_id = 0
        self.max_length = self.pad_to = int(getattr(tokenizer, "context_length", None) or 77)
        self.derive_specials(tokenizer(["a"])[0].tolist())
        self.requires_grad_(False)
        self.eval()

    def content_ids(self, text: str) -> list[int]:
        inner = getattr(self.tokenizer, "tokenizer", None)  # open_clip's HFTokenizer wrapper
        if inner is not None:
            return list(inner(text, add_special_tokens=False)["input_ids"])
        return list(self.tokenizer.encode(text))

    def token_embeddings(self, input_ids):
        if self.hf:
            return self.model.text.transformer.get_input_embeddings()(input_ids)
        return self.model.token_embedding(input_ids)

    def encode_embeds(self, inputs_embeds, attention_mask, input_ids):
        if self.hf:
            text = self.model.text
            out = text.transformer(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
            return text.proj(text.pooler(out, attention_mask))
        from open_clip.transformer import text_global_pool

        m = self.model
        x = inputs_embeds + m.positional_embedding.to(inputs_embeds.dtype)
        x = m.ln_final(m.transformer(x, attn_mask=m.attn_mask))
        x = text_global_pool(x, input_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        proj = m.text_projection
        if proj is None:
            return x
        return proj(x) if isinstance(proj, nn.Linear) else x @ proj


class _CallImage(nn.Module):
    def __init__(self, model, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "open_clip":
            return self.model.encode_image(x)
        out = self.model.get_image_features(pixel_values=x)
        return out if isinstance(out, torch.Tensor) else out.pooler_output


def load_open_clip(arg: str) -> DualEncoder:
    try:
        import open_clip
    except ImportError as e:
        raise ConfigError("open_clip backends need the [clip] extra: pip install 'medvlp[clip]'") from e
    if Path(arg).is_dir():
        name, pretrained = f"local-dir:{arg}", None
    else:
        name, _, pretrained = arg.partition("@")
    try:
        model = open_clip.create_model(name, pretrained=pretrained or None)
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as e:  # open_clip raises RuntimeError/OSError/HF errors when weights are absent
        raise ConfigError(f"open_clip model {arg!r} could not be loaded ({e}); the weights must be "
                          "in the local cache or reachable") from e
    return wrap_open_clip(model, tokenizer, source=f"open_clip:{arg}")


def wrap_open_clip(model, tokenizer, *, source: str) -> DualEncoder:
    """A dual encoder around an open_clip model + tokenizer (also used by tests with a tiny model)."""
    vis = getattr(model, "visual", None)
    size = getattr(vis, "image_size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else size
    mean = list(getattr(vis, "image_mean", None) or CLIP_MEAN)
    std = list(getattr(vis, "image_std", None) or CLIP_STD)
    pre = {"img_size": int(size), "in_chans": 3, "mean": mean, "std": std}
    return DualEncoder(_CallImage(model, "open_clip"), OpenClipTextSide(model, tokenizer, source), pre,
                       source=source, parts_used={"dual_encoder": source})


def load_hf_clip(arg: str) -> DualEncoder:
    from transformers import AutoTokenizer, CLIPModel

    try:
        model = CLIPModel.from_pretrained(arg)
        tokenizer = AutoTokenizer.from_pretrained(arg)
    except OSError as e:
        raise ConfigError(f"transformers CLIP {arg!r} could not be loaded ({e}); use a local folder "
                          "or a hub name in the local cache") from e
    return wrap_hf_clip(model, tokenizer, source=f"hf-clip:{arg}")


def wrap_hf_clip(model, tokenizer, *, source: str) -> DualEncoder:
    """A dual encoder around a transformers ``CLIPModel`` + tokenizer."""
    pre = {"img_size": int(model.config.vision_config.image_size), "in_chans": 3,
           "mean": CLIP_MEAN, "std": CLIP_STD}
    return DualEncoder(_CallImage(model, "hf"), HFClipTextSide(model, tokenizer, source), pre,
                       source=source, parts_used={"dual_encoder": source})


def tiny_clip(backend: str, embed_dim: int = 32) -> DualEncoder:
    """A random CLIP from a tiny config (tests): ``"hf-clip"`` (MiniLM's tokenizer) or ``"open_clip"``."""
    if backend == "hf-clip":
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel

        from medvlp.models.text import minilm_folder

        tok = AutoTokenizer.from_pretrained(str(minilm_folder()))
        cfg = CLIPConfig(
            text_config=dict(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                             num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=64,
                             eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id,
                             pad_token_id=tok.pad_token_id),
            vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                               num_hidden_layers=2, num_attention_heads=2),
            projection_dim=embed_dim)
        return wrap_hf_clip(CLIPModel(cfg).eval(), tok, source="hf-clip: tiny random CLIPConfig (test)")
    if backend == "open_clip":
        import open_clip

        model = open_clip.CLIP(embed_dim, vision_cfg=dict(image_size=32, layers=1, width=32, patch_size=8,
                                                          head_width=16),
                               text_cfg=dict(context_length=32, vocab_size=49408, width=32, heads=2, layers=1))
        tok = open_clip.SimpleTokenizer(context_length=32)
        return wrap_open_clip(model.eval(), tok, source="open_clip: tiny random CLIP config (test)")
    raise ConfigError(f"tiny_clip: unknown backend {backend!r}")
