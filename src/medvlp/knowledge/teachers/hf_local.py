"""A teacher over a local Hugging Face causal LM (``transformers`` ``generate``)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from medvlp.knowledge.teachers.base import TeacherError


class HFLocalTeacher:
    """Greedy generation with a causal LM loaded by hub name or from a folder, or passed in.

    The chat template is used when the tokenizer has one (instruct models), else the raw
    prompt. Only newly generated tokens are decoded.
    """

    concurrency = 1  # one model in memory; parallel calls would only contend for the CPU/GPU

    def __init__(self, name_or_path: str | Path | None = None, *, model: Any = None,
                 tokenizer: Any = None, max_new_tokens: int = 384, device: str = "cpu",
                 name: str | None = None):
        if model is None or tokenizer is None:
            if name_or_path is None:
                raise TeacherError("HFLocalTeacher needs a hub name / folder, or model and tokenizer")
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tokenizer = tokenizer or AutoTokenizer.from_pretrained(str(name_or_path))
                model = model or AutoModelForCausalLM.from_pretrained(str(name_or_path))
            except (OSError, ValueError) as e:
                raise TeacherError(f"cannot load causal LM {name_or_path!r}: {e}") from e
        self.model = model.to(device).eval()
        self.tokenizer = tokenizer
        self.device = device
        self.max_new_tokens = max_new_tokens
        self.name = name or f"hf:{name_or_path or getattr(model.config, '_name_or_path', '') or 'model'}"

    def _encode(self, prompt: str):
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        else:
            text = prompt
        return self.tokenizer(text, return_tensors="pt").to(self.device)

    def generate(self, prompt: str, schema: dict[str, Any]) -> str:
        import torch

        inputs = self._encode(prompt)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                      do_sample=False, pad_token_id=pad)
        new = out[0, inputs["input_ids"].shape[1]:]
        return self.tokenizer.decode(new, skip_special_tokens=True)
