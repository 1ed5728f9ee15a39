"""Frozen causal language models: the teacher decoder VIVID-Med (and the CT adapter) train against.

VIVID-Med keeps a decoder-only LLM frozen and trains only what feeds it (a visual prefix); the LM's
next-token loss on the structured-report target is the supervision (METHODS.md 1.1). This module
wraps any Hugging Face causal LM behind one small contract (:class:`CausalLM`):

- ``embed(ids)`` -> input embeddings, so callers can splice a visual prefix before prompt tokens;
- ``forward(inputs_embeds, attention_mask)`` -> logits, differentiable w.r.t. ``inputs_embeds``;
- ``generate_from_prefix(prefix_embeds, prompts)`` -> greedy continuations (evaluation, demos).

Freezing is by ``requires_grad`` and a ``train()`` override, never ``torch.no_grad``: gradients must
flow *through* the LM into the prefix while its own weights stay fixed.

Sources (``load_causal_lm``):
- ``None`` / ``"reportlm"``: the offline report LM shipped in ``medvlp/models/reportlm/`` -- a small
  Llama-style LM trained by ``medvlp lm train`` on real IU X-ray report text plus UMS JSON renderings
  (see ``docs/teachers_lm.md``). It stands in for the paper's Qwen2.5-1.5B-Instruct on CPU-only,
  offline installs; ``source`` says so.
- a folder or hub name (default paper name :data:`PAPER_CAUSAL_LM`): AutoModelForCausalLM +
  AutoTokenizer, needing the weights in the local cache or network access.
- ``random_init=True``: the same config and tokenizer with fresh weights -- the "random-init frozen LM"
  control that tells whether the LM's *knowledge* matters or only its architecture.

Tokenizer convention (as Qwen's): ``tokenizer(texts)`` adds no special tokens. Callers building a
training target append ``tokenizer.eos_token`` themselves so greedy generation learns where to stop.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from medvlp.errors import ConfigError

OFFLINE_CAUSAL_LM = "reportlm"
PAPER_CAUSAL_LM = "Qwen/Qwen2.5-1.5B-Instruct"
REPORTLM_FOLDER = Path(__file__).resolve().parent / "reportlm"
REPORTLM_META = "medvlp_reportlm.json"


class CausalLM(nn.Module):
    """A frozen Hugging Face causal LM with its tokenizer (pad token set, right padding)."""

    def __init__(self, model: nn.Module, tokenizer, *, source: str = "custom"):
        super().__init__()
        if tokenizer.pad_token is None:
            # Qwen-style tokenizers ship without a pad token; padded positions are masked anyway.
            if tokenizer.eos_token is None:
                raise ConfigError(f"causal LM {source!r}: tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"
        self.model = model
        self.tokenizer = tokenizer
        self.source = source
        self.model.requires_grad_(False)
        self.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.get_input_embeddings().weight.shape[1])

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def eos_token_id(self) -> int:
        eos = self.tokenizer.eos_token_id
        return int(eos if eos is not None else self.tokenizer.pad_token_id)

    def train(self, mode: bool = True) -> CausalLM:
        # Frozen means frozen: dropout stays off whatever the parent module does.
        super().train(False)
        return self

    def tokenize(self, texts: list[str], *, add_eos: bool = False, max_length: int | None = None
                 ) -> dict[str, torch.Tensor]:
        """Right-padded ``input_ids`` / ``attention_mask`` ``(B, L)`` on the LM's device, no BOS."""
        if isinstance(texts, str):
            texts = [texts]
        texts = [t + self.tokenizer.eos_token if add_eos else t for t in texts]
        enc = self.tokenizer(list(texts), padding=True, truncation=max_length is not None,
                             max_length=max_length, add_special_tokens=False, return_tensors="pt")
        return {"input_ids": enc["input_ids"].to(self.device),
                "attention_mask": enc["attention_mask"].to(self.device)}

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Input embeddings ``(B, L, H)`` of token ids (the LM adds positions itself, e.g. RoPE)."""
        return self.model.get_input_embeddings()(input_ids.to(self.device))

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``(B, L, V)``; differentiable w.r.t. ``inputs_embeds`` (right padding assumed)."""
        if attention_mask is None:
            attention_mask = torch.ones(inputs_embeds.shape[:2], dtype=torch.long, device=inputs_embeds.device)
        out = self.model(inputs_embeds=inputs_embeds.to(self.dtype), attention_mask=attention_mask,
                         use_cache=False)
        return out.logits

    @torch.no_grad()
    def generate_from_prefix(self, prefix_embeds: torch.Tensor | None, prompts: list[str], *,
                             max_new_tokens: int = 128) -> list[str]:
        """Greedy continuation of ``[prefix_embeds ; embed(prompt)]`` per sample; text after the prompt.

        ``prefix_embeds`` ``(B, P, H)`` or ``None`` (text-only prompts). Sequences of unequal prompt
        length are left-padded here, with explicit position ids so every sample sees the same
        positions as in right-padded training; decoding stops at EOS.
        """
        if prefix_embeds is not None and prefix_embeds.shape[0] != len(prompts):
            raise ValueError(f"generate_from_prefix: {prefix_embeds.shape[0]} prefixes for {len(prompts)} prompts")
        embeds, lengths = [], []
        for i, prompt in enumerate(prompts):
            ids = self.tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self.device)
            e = self.embed(ids)[0]
            if prefix_embeds is not None:
                e = torch.cat([prefix_embeds[i].to(self.device, e.dtype), e], dim=0)
            if e.shape[0] == 0:
                raise ValueError(f"generate_from_prefix: sample #{i} has neither a prefix nor prompt tokens")
            embeds.append(e)
            lengths.append(e.shape[0])
        B, T, H = len(embeds), max(lengths), self.hidden_size
        x = torch.zeros(B, T, H, dtype=self.dtype, device=self.device)
        mask = torch.zeros(B, T, dtype=torch.long, device=self.device)
        for i, e in enumerate(embeds):
            x[i, T - e.shape[0]:] = e
            mask[i, T - e.shape[0]:] = 1
        out_ids = torch.full((B, max_new_tokens), self.eos_token_id, dtype=torch.long, device=self.device)
        done = torch.zeros(B, dtype=torch.bool, device=self.device)
        past, step_in = None, x
        for t in range(max_new_tokens):
            pos = (mask.cumsum(1) - 1).clamp_min(0)[:, -step_in.shape[1]:]
            out = self.model(inputs_embeds=step_in, attention_mask=mask, position_ids=pos,
                             past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1].argmax(-1)
            nxt = torch.where(done, torch.full_like(nxt, self.eos_token_id), nxt)
            out_ids[:, t] = nxt
            done |= nxt == self.eos_token_id
            if bool(done.all()):
                break
            step_in = self.embed(nxt[:, None])
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=mask.device)], dim=1)
        texts = []
        for row in out_ids.tolist():
            if self.eos_token_id in row:
                row = row[:row.index(self.eos_token_id)]
            texts.append(self.tokenizer.decode(row, skip_special_tokens=True))
        return texts

    @torch.no_grad()
    def generate(self, prompts: list[str], *, max_new_tokens: int = 128) -> list[str]:
        """Greedy text-only continuation (no visual prefix)."""
        return self.generate_from_prefix(None, prompts, max_new_tokens=max_new_tokens)


def _reportlm_source(folder: Path) -> str:
    import json

    meta_path = folder / REPORTLM_META
    version = "?"
    if meta_path.exists():
        version = json.loads(meta_path.read_text()).get("version", "?")
    return f"medvlp-reportlm v{version} (offline, shipped with medvlp)"


def load_causal_lm(name: str | None = None, *, device: str | torch.device = "cpu", random_init: bool = False,
                   dtype: torch.dtype = torch.float32, seed: int = 0) -> CausalLM:
    """A frozen :class:`CausalLM`.

    ``name``: ``None`` or ``"reportlm"`` (the offline report LM in the package); a local folder with a
    Hugging Face causal LM and tokenizer; or a hub name such as :data:`PAPER_CAUSAL_LM` (weights in the
    local HF cache or network). ``random_init=True`` keeps config and tokenizer but re-initialises the
    weights (seeded by ``seed``): the random-init frozen LM control. ``dtype``: the weights' dtype
    (the shipped LM stores fp16 and loads as fp32; use bfloat16 for 1.5B-size models on a GPU).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name in (None, OFFLINE_CAUSAL_LM):
        folder = REPORTLM_FOLDER
        if not (folder / "config.json").exists():
            raise ConfigError(f"causal LM {OFFLINE_CAUSAL_LM!r}: the offline report LM is missing from {folder} "
                              f"(rebuild it with `medvlp lm train --out {folder}`)")
        where, source = str(folder), _reportlm_source(folder)
    else:
        where = str(name)
        source = f"{name} (local folder)" if Path(name).is_dir() else str(name)
    try:
        tokenizer = AutoTokenizer.from_pretrained(where)
        if random_init:
            config = AutoConfig.from_pretrained(where)
            torch.manual_seed(seed)
            model = AutoModelForCausalLM.from_config(config, dtype=dtype)
            source = f"{source} -- random init (seed {seed}) control, pretrained weights NOT used"
        else:
            model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype)
    except (OSError, ValueError) as e:
        raise ConfigError(f"causal LM {name!r} could not be loaded ({type(e).__name__}: {e}); give a local "
                          f"folder with a Hugging Face causal LM, a hub name whose weights are cached, or "
                          f"None/'reportlm' for the offline report LM") from e
    return CausalLM(model, tokenizer, source=source).to(device)


def _fallback_tokenizer():
    """A small character-level tokenizer, used only before the report LM (and its tokenizer) exists."""
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", unk_token="<unk>")


def tiny_causal_lm(*, hidden_size: int = 32, num_layers: int = 2, seed: int = 0) -> CausalLM:
    """A tiny random Llama-style causal LM with the report LM's tokenizer, for fast tests."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if (REPORTLM_FOLDER / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(str(REPORTLM_FOLDER))
        source = "tiny random Llama (reportlm tokenizer)"
    else:
        tokenizer, source = _fallback_tokenizer(), "tiny random Llama (character tokenizer)"
    heads = 4 if hidden_size % 4 == 0 and hidden_size >= 16 else 1
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
                         num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=1024, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         tie_word_embeddings=False)
    torch.manual_seed(seed)
    return CausalLM(LlamaForCausalLM(config), tokenizer, source=source)
