"""ViP (MICCAI 2024; METHODS.md §2): few-shot classification with visual-symptom prompts on a frozen
dual encoder, and the baselines that share its harness.

A class is described by texts (its visual symptoms, or its name); every text is encoded by the
frozen text tower, optionally with learned context vectors spliced into its token embeddings
(Context Prompt, CoP), and each class's text embeddings are merged into one class embedding
``s_c`` (Merge Prompt, MeP, or the mean / max ablations). An image is classified by
``logit_c = 100 · cos(f, s_c)`` and training minimises cross-entropy over those logits; only the
prompt parameters (context ``ctx``, grouping tokens ``g``, ``W_q``, ``W_k``) are trained.

Variants (``VARIANTS``), all built by :func:`build_classifier`:

| name | texts | context | merge | trained |
|---|---|---|---|---|
| ``zeroshot_names`` | "a {modality} image showing {name}" | - | mean (one text) | no |
| ``zeroshot_symptoms`` | symptoms | - | mean | no |
| ``coop`` | class name | CoP | mean (one text) | yes |
| ``vip_cop`` | symptoms | CoP | mean ("CoP only" = mean-merge ablation) | yes |
| ``vip_cop_max`` | symptoms | CoP | max (max-merge ablation) | yes |
| ``vip_mep`` | symptoms | - | MeP ("MeP only") | yes |
| ``vip`` | symptoms | CoP | MeP (the full method) | yes |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from medvlp.errors import ConfigError
from medvlp.losses.cosine_logit_ce import cosine_logit_ce, cosine_logits
from medvlp.methods.base import Method
from medvlp.models.dual_encoder import DualEncoder, Position
from medvlp.models.prompts import ContextPrompt, Merge, MergePrompt, group_by_class


@dataclass(frozen=True)
class Variant:
    texts: str            # "symptoms", "names" or "template"
    use_context: bool
    merge: Merge
    trained: bool
    label: str


VARIANTS: dict[str, Variant] = {
    "zeroshot_names": Variant("template", False, "mean", False, "zero-shot, class names"),
    "zeroshot_symptoms": Variant("symptoms", False, "mean", False, "zero-shot, mean of symptoms"),
    "coop": Variant("names", True, "mean", True, "CoOp (class name + learned context)"),
    "vip_cop": Variant("symptoms", True, "mean", True, "ViP, CoP only (mean merge)"),
    "vip_cop_max": Variant("symptoms", True, "max", True, "ViP, CoP + max merge"),
    "vip_mep": Variant("symptoms", False, "attention", True, "ViP, MeP only"),
    "vip": Variant("symptoms", True, "attention", True, "ViP (CoP + MeP)"),
}
DEFAULT_TEMPLATE = "a {modality} image showing {name}"


class PromptClassifier(Method):
    """Frozen dual encoder + prompt modules; ``forward(batch)`` takes cached normalised image
    ``features`` ``(B, D)`` (the image encoder is frozen) or raw ``image`` tensors, and ``label``."""

    def __init__(self, encoder: DualEncoder, class_texts: list[list[str]], *, use_context: bool = True,
                 merge: Merge = "attention", n_ctx: int = 4, position: Position = "end",
                 class_specific: bool = False, init_std: float = 0.02, normalize_symptoms: bool = False,
                 class_names: list[str] | None = None):
        super().__init__()
        if len(class_texts) < 2 or any(not t for t in class_texts):
            raise ConfigError("PromptClassifier: needs at least two classes, each with at least one text")
        self.encoder = encoder
        self.freeze(encoder)
        self.num_classes = len(class_texts)
        self.class_texts = [list(t) for t in class_texts]
        self.class_names = list(class_names or [f"class {c}" for c in range(self.num_classes)])
        self.logit_scale = encoder.logit_scale
        texts = [t for ts in class_texts for t in ts]
        tc = torch.tensor([c for c, ts in enumerate(class_texts) for _ in ts], dtype=torch.long)
        self.register_buffer("text_class", tc, persistent=False)
        dev = encoder.device
        self.context: ContextPrompt | None = None
        if use_context:
            layout = encoder.text_layout(texts, n_ctx, position)
            self.register_buffer("input_ids", layout.input_ids.to(dev), persistent=False)
            self.register_buffer("attention_mask", layout.attention_mask.to(dev), persistent=False)
            with torch.no_grad():  # the embedding table is frozen: look the tokens up once
                embeds = encoder.token_embeddings(self.input_ids)
            self.register_buffer("token_embeds", embeds.detach(), persistent=False)
            self.context = ContextPrompt(layout, tc, self.num_classes, embeds.shape[-1],
                                         class_specific=class_specific, init_std=init_std).to(dev)
        else:
            with torch.no_grad():  # no learned context: the text features never change
                layout = encoder.text_layout(texts)
                feats = encoder.text.encode_ids(layout).float()
            self.register_buffer("fixed_text_feats", feats, persistent=False)
        with torch.no_grad():
            dim = self._text_features().shape[1]
        self.merge = MergePrompt(self.num_classes, dim, merge, init_std=init_std,
                                 normalize_symptoms=normalize_symptoms).to(dev)

    def _text_features(self) -> torch.Tensor:
        """``(N_texts, D)`` text-tower outputs (not normalised, as ViP feeds them to MeP)."""
        if self.context is None:
            return self.fixed_text_feats
        embeds = self.context(self.token_embeds)
        return self.encoder.text.encode_embeds(embeds, self.attention_mask, self.input_ids).float()

    def class_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``s_c`` ``(C, D)`` (not normalised) and merge weights ``(C, K)``."""
        t, mask = group_by_class(self._text_features(), self.text_class, self.num_classes)
        return self.merge(t, mask)

    def logits(self, image_feats: torch.Tensor) -> torch.Tensor:
        s, _ = self.class_embeddings()
        return cosine_logits(image_feats.to(s.device).float(), s, self.logit_scale)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        feats = batch.get("features")
        if feats is None:
            if "image" not in batch:
                raise KeyError(f"PromptClassifier: batch needs 'features' or 'image' (keys: {sorted(batch)})")
            feats = self.encoder.encode_image(batch["image"])
        s, _ = self.class_embeddings()
        labels = batch["label"].to(s.device).long().reshape(-1)
        loss = cosine_logit_ce(feats.to(s.device).float(), s, labels, self.logit_scale)
        with torch.no_grad():
            acc = (cosine_logits(feats.to(s.device).float(), s, self.logit_scale).argmax(1) == labels).float().mean()
        return {"loss": loss, "acc": acc}

    @torch.no_grad()
    def merge_table(self) -> list[dict[str, Any]]:
        """Per class and text: the learned merge weight (for the report)."""
        _, w = self.class_embeddings()
        return [{"class": self.class_names[c], "text": text, "merge_weight": float(w[c, k])}
                for c, texts in enumerate(self.class_texts) for k, text in enumerate(texts)]

    def prompt_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)


def class_texts_for(variant: str, class_names: list[str], symptoms: dict[str, list[str]] | None, *,
                    modality: str = "medical", template: str = DEFAULT_TEMPLATE) -> list[list[str]]:
    """The texts describing each class for ``variant`` (see the module table)."""
    v = _variant(variant)
    if v.texts == "symptoms":
        if symptoms is None:
            raise ConfigError(f"variant {variant!r} needs a symptom set")
        missing = [c for c in class_names if c not in symptoms]
        if missing:
            raise ConfigError(f"the symptom set has no entry for classes {missing} (has {list(symptoms)})")
        return [list(symptoms[c]) for c in class_names]
    names = [c.replace("_", " ") for c in class_names]
    if v.texts == "names":
        return [[n] for n in names]
    return [[template.format(modality=modality, name=n)] for n in names]


def build_classifier(variant: str, encoder: DualEncoder, class_names: list[str],
                     symptoms: dict[str, list[str]] | None = None, *, modality: str = "medical",
                     template: str = DEFAULT_TEMPLATE, **prompt_options: Any) -> PromptClassifier:
    """A :class:`PromptClassifier` for one of :data:`VARIANTS`; ``prompt_options`` go to it
    (n_ctx, position, class_specific, init_std, normalize_symptoms)."""
    v = _variant(variant)
    texts = class_texts_for(variant, class_names, symptoms, modality=modality, template=template)
    return PromptClassifier(encoder, texts, use_context=v.use_context, merge=v.merge,
                            class_names=class_names, **prompt_options)


def _variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown ViP variant {name!r}; available: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def probabilities(model: PromptClassifier, feats: torch.Tensor, batch_size: int = 4096) -> torch.Tensor:
    """Softmax class probabilities ``(N, C)`` of cached image features (class embeddings once)."""
    with torch.no_grad():
        s, _ = model.class_embeddings()
        out = [F.softmax(cosine_logits(feats[i:i + batch_size].to(s.device).float(), s, model.logit_scale), 1)
               for i in range(0, len(feats), batch_size)]
    return torch.cat(out).cpu() if out else torch.empty(0, model.num_classes)
