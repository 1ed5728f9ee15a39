"""VIVID-Med training examples: UMS records for images, tokenised targets, answerability weights.

One example's text part is ``[prompt tokens][target JSON tokens][eos]``; the visual prefix is
prepended later in embedding space. Positions are known exactly, so

- ``labels`` = -100 on every prompt token (and on padding, added by :func:`collate`), the target
  ids elsewhere - masking by *true* positions, never by a shared prompt length (the reference
  code's left-padding bug, METHODS.md 1.9.7);
- ``weights`` = 1 on supervised tokens except ``false_weight`` on the state-value tokens of
  unanswerable findings (METHODS.md 1.4). Tokens are found through the fast tokenizer's character
  offsets: a token is a value token when it overlaps the characters of ``null`` in
  ``"state": null`` (``keep_structural_tokens=True``) or of the whole ``"state": null`` span
  (``False``). ``scope="findings_only"`` restricts masking to findings; ``"all"`` also masks a
  null ``study_view`` / ``modality``.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from medvlp.errors import ConfigError, DataError
from medvlp.knowledge.ums import UMSRecord, render_target
from medvlp.losses.token_weighted_ce import IGNORE_INDEX

Scope = Literal["findings_only", "all"]


# --------------------------------------------------------------------------------------------
# UMS records for a pretraining ImageSet


def records_for_imageset(ds) -> list[UMSRecord]:
    """Compile one UMS record per image from the set's labels (deterministic compilers only).

    nih1000: NIH labels (all 15 answerable, view from the metadata); pneumoniamnist:
    ``compile_pneumoniamnist``; ham10000: its diagnosis; any other set (a CSV manifest): its label
    columns through ``compile_table`` with CheXpert value conventions (1/0/-1/NaN) for multilabel
    sets, one-present-others-absent for binary/multiclass.
    """
    from medvlp.knowledge import compilers as C

    n = len(ds)
    if ds.name == "nih1000":
        views = _per_image(ds, "view_position")
        out = []
        for i in range(n):
            found = [name for name, v in zip(ds.label_names, ds.labels[i]) if v == 1]
            out.append(C.compile_nih("|".join(found) or "No Finding", record_id=str(i),
                                     path=ds.source, view=None if views is None else views[i]))
        return out
    if ds.name == "pneumoniamnist":
        return [C.compile_pneumoniamnist(int(y), record_id=str(i), path=ds.source)
                for i, y in enumerate(ds.labels)]
    if ds.name == "ham10000":
        return [C.compile_ham10000(ds.label_names[int(y)], record_id=str(i), path=ds.source)
                for i, y in enumerate(ds.labels)]
    if ds.task == "multilabel":
        columns, values = list(ds.label_names), {"1": "present", "0": "absent", "-1": "uncertain"}
        rows = [dict(zip(columns, row.tolist())) for row in ds.labels]
    else:
        columns = list(ds.label_names) if ds.task == "multiclass" else [ds.label_names[-1]]
        values = {"1": "present", "0": "absent"}
        rows = [{c: int(int(y) == j) if ds.task == "multiclass" else int(y) for j, c in enumerate(columns)}
                for y in ds.labels]
    mapping = C.LabelMapping(modality=ds.modality, columns={c: _snake(c) for c in columns}, values=values,
                             source=f"labels of {ds.name}")
    return [C.compile_with_mapping(r, mapping, record_id=str(i), path=ds.source) for i, r in enumerate(rows)]


def _snake(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_") or "finding"


def _per_image(ds, key: str):
    values = ds.meta.get(key)
    if values is None:
        return None
    values = np.asarray(values)
    if len(values) == len(ds):
        return values
    idx = ds.meta.get("parent_indices")
    if idx is not None and len(idx) == len(ds) and len(values) > int(np.max(idx, initial=-1)):
        return values[idx]
    return None


# --------------------------------------------------------------------------------------------
# Tokenisation with answerability weights


def null_value_spans(target: str, *, keep_structural_tokens: bool = True,
                     scope: Scope = "findings_only") -> list[tuple[int, int]]:
    """Character spans of the state values of unanswerable fields in a rendered target.

    The i-th ``"state": ...`` match is the i-th finding (render_target's order), as in the
    reference trainer; only ``null`` states are returned.
    """
    spans = []
    for m in re.finditer(r'"state": (null|"(?:present|absent|uncertain)")', target):
        if m.group(1) == "null":
            spans.append((m.start(1), m.end(1)) if keep_structural_tokens else (m.start(), m.end()))
    if scope == "all":
        for m in re.finditer(r'"(?:study_view|modality)": (null)', target):
            spans.append((m.start(1), m.end(1)) if keep_structural_tokens else (m.start(), m.end()))
    elif scope != "findings_only":
        raise ConfigError(f"answerability scope={scope!r}: expected 'findings_only' or 'all'")
    return sorted(spans)


def encode_example(tokenizer, prompt: str, target: str, *, false_weight: float = 0.1,
                   keep_structural_tokens: bool = True, scope: Scope = "findings_only",
                   answerability_mask: bool = True, max_length: int = 512) -> dict[str, torch.Tensor]:
    """``{"input_ids", "labels", "weights"}`` (1-D) for ``prompt + target + eos``."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("VIVID needs a fast (Rust) tokenizer: answerability masking locates "
                          "value tokens by character offsets")
    # No special tokens, as CausalLM.generate_from_prefix tokenises prompts (interface A).
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    enc = tokenizer(target, add_special_tokens=False, return_offsets_mapping=True)
    t_ids, offsets = list(enc["input_ids"]), list(enc["offset_mapping"])
    weights = [1.0] * len(t_ids)
    if answerability_mask:
        spans = null_value_spans(target, keep_structural_tokens=keep_structural_tokens, scope=scope)
        for j, (s, e) in enumerate(offsets):
            if e > s and any(s < se and e > ss for ss, se in spans):
                weights[j] = false_weight
    eos = tokenizer.eos_token_id
    if eos is not None:
        t_ids.append(eos)
        weights.append(1.0)
    if len(p_ids) + len(t_ids) > max_length:
        raise ConfigError(f"VIVID example of {len(p_ids) + len(t_ids)} tokens > max_text_length="
                          f"{max_length}: raise it or use field-query training")
    ids = torch.tensor(p_ids + t_ids, dtype=torch.long)
    labels = ids.clone()
    labels[:len(p_ids)] = IGNORE_INDEX
    w = torch.tensor([0.0] * len(p_ids) + weights, dtype=torch.float32)
    return {"input_ids": ids, "labels": labels, "weights": w}


def collate(batch: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right padding: pads get attention 0, label -100 and weight 0; prompt labels stay -100."""
    n = max(len(b["input_ids"]) for b in batch)
    out: dict[str, Any] = {"input_ids": torch.full((len(batch), n), pad_id, dtype=torch.long),
                           "attention_mask": torch.zeros(len(batch), n, dtype=torch.long),
                           "labels": torch.full((len(batch), n), IGNORE_INDEX, dtype=torch.long),
                           "weights": torch.zeros(len(batch), n)}
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        out["input_ids"][i, :k] = b["input_ids"]
        out["attention_mask"][i, :k] = 1
        out["labels"][i, :k] = b["labels"]
        out["weights"][i, :k] = b["weights"]
    out["image"] = torch.stack([b["image"] for b in batch])
    out["index"] = torch.tensor([b["index"] for b in batch], dtype=torch.long)
    return out


# --------------------------------------------------------------------------------------------
# The dataset


class VIVIDDataset(Dataset):
    """Images + tokenised UMS (or free-text) targets; field queries redrawn every access.

    Random draws (fields, free-text templates) use a numpy Generator seeded from torch's global
    RNG, which the engine seeds and checkpoints, so runs and resumes are reproducible.
    """

    def __init__(self, imageset, records: list[UMSRecord], transform: Callable, tokenizer, *,
                 target: Literal["ums", "free_text"] = "ums", field_query: bool = True,
                 k_range: tuple[int, int] = (4, 6), focus_p: float = 0.6, false_weight: float = 0.1,
                 answerability_mask: bool = True, keep_structural_tokens: bool = True,
                 scope: Scope = "findings_only", max_text_length: int = 512,
                 free_text_drop: tuple[float, float] = (0.5, 0.7)):
        if len(records) != len(imageset):
            raise DataError(imageset.source, f"{len(records)} UMS records for {len(imageset)} images",
                            "one record per image")
        self.imageset, self.records, self.transform, self.tokenizer = imageset, records, transform, tokenizer
        self.target, self.field_query, self.k_range, self.focus_p = target, field_query, k_range, focus_p
        self.mask_kw = {"false_weight": false_weight, "keep_structural_tokens": keep_structural_tokens,
                        "scope": scope, "answerability_mask": answerability_mask,
                        "max_length": max_text_length}
        self.free_text_drop = free_text_drop

    def __len__(self) -> int:
        return len(self.records)

    def text_for(self, i: int, rng: np.random.Generator) -> tuple[str, str]:
        """``(prompt, target)`` for record ``i``."""
        from medvlp.knowledge.field_query import DEFAULT_PROMPT, field_query_prompt, sample_fields

        rec = self.records[i]
        if self.target == "free_text":
            from medvlp.knowledge.report_text import render_report

            absent_p, null_p = self.free_text_drop
            return ("Write the findings of this chest radiograph:\n" if rec.modality == "CXR"
                    else "Write the findings of this image:\n",
                    render_report(rec, rng, absent_drop_p=absent_p, null_drop_p=null_p))
        if self.field_query:
            fields = sample_fields(rec, rng, k_min=self.k_range[0], k_max=self.k_range[1],
                                   focus_p=self.focus_p)
            if fields:
                return field_query_prompt(fields, rec.modality), render_target(rec, fields)
        return DEFAULT_PROMPT, render_target(rec)

    def __getitem__(self, i: int) -> dict[str, Any]:
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))
        prompt, target = self.text_for(i, rng)
        ex = encode_example(self.tokenizer, prompt, target, **self.mask_kw)
        ex["image"] = self.transform(self.imageset.images[i])
        ex["index"] = int(i)
        return ex


def target_is_valid_json(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False
