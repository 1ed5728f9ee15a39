"""Train medvlp's offline report LM: the small frozen causal LM VIVID-Med uses when no LLM is at hand.

The paper keeps Qwen2.5-1.5B-Instruct frozen (METHODS.md 1.1); on a CPU-only, offline install medvlp
ships its own small decoder instead (METHODS.md 1.8): a Llama-style LM trained here with a next-token
loss on

- the real IU X-ray report text (findings + impression, 3,851 studies; R2Gen train split for training,
  its val/test for validation, studies outside R2Gen's split for training), and
- UMS JSON renderings (``knowledge.ums.render_target``) of records compiled deterministically from
  the rules labeler over those IU reports (all four states incl. ``null``/``uncertain``), the NIH
  ChestX-ray14 full label table (with view) and PneumoniaMNIST labels, each with the prompt VIVID
  uses (``"Generate a structured medical report:\\n"`` + JSON) or as a field-query subset
  (``knowledge.field_query``: the prompt lists k answerable fields, the JSON holds only them),

so the frozen LM knows the report language and the JSON grammar before it ever sees an image. The
tokenizer is a byte-level BPE trained with ``tokenizers`` whose pre-tokenisation is JSON-aware:
snake_case keys are single pre-tokens, punctuation runs split from words and a word keeps its leading
space, so ``"state": null`` always gives the same tokens (`` null`` is one token) wherever it appears.

The run is seeded. With ``time_budget_s=None`` it is step-exact (same data order, same schedule); with
a budget (the default, so ``medvlp lm train`` finishes in <= 15 min on a 2-core CPU) the cosine
schedule follows wall-clock progress and the metadata records the steps done and whether the budget
ended it. Entry points: ``train_report_lm`` and
``run_lm_train`` (``medvlp lm train --out DIR``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from medvlp.config import StrictConfig
from medvlp.errors import ConfigError
from medvlp.models.causal_lm import REPORTLM_META, CausalLM

log = logging.getLogger(__name__)

REPORTLM_VERSION = "1"
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
#: Pre-tokenisation: a word (letters and ``_``, so JSON keys stay whole) or a punctuation run, each
#: with an optional leading space; single digits; whitespace runs.
JSON_AWARE_SPLIT = r" ?[A-Za-z_]+| ?[0-9]| ?[^\sA-Za-z0-9_]+|\s+(?!\S)|\s+"


class ReportLMConfig(StrictConfig):
    """Everything that decides the shipped report LM (saved into ``medvlp_reportlm.json``)."""

    seed: int = 0
    # tokenizer
    vocab_size: int = 2048
    # model (Llama-style; embeddings tied so the file stays small)
    hidden_size: int = 192
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 512
    # corpus
    nih_records: int = 2000              # sampled from the 112k-row NIH label table
    nih_val_patient_fraction: float = 0.05
    pneumoniamnist_records: int = 200
    iu_ums_full_fraction: float = 0.3    # IU rules-labelled records rendered as full targets ...
    field_query_fraction: float = 0.5    # ... and each UMS record gets a field-query rendering with this p
    report_text_repeats: int = 2         # real report text is scarcer than JSON: up-weight it
    # optimisation
    block_size: int = 256
    batch_size: int = 8
    max_steps: int = 400
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    bf16_autocast: bool = True           # CPU bf16 matmuls (fp32 master weights); ~1.5x faster here
    # Wall-clock budget of the optimisation loop. When set, the cosine schedule runs on
    # max(step / max_steps, elapsed / budget) so a slow machine still anneals and stops in time
    # (the metadata records the steps done); None gives a step-exact, machine-independent run.
    time_budget_s: float | None = 690.0
    # evaluation
    eval_every: int = 100
    val_blocks: int = 16
    greedy_samples: int = 32
    max_new_tokens: int = 300


@dataclass
class Corpus:
    """Training/validation documents (prompt + target text, no special tokens) by source."""

    train: dict[str, list[str]] = field(default_factory=dict)
    val: dict[str, list[str]] = field(default_factory=dict)
    # greedy-sample probes: (prompt, requested fields or None for the full target)
    probes: list[tuple[str, list[str] | None]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, dict[str, int]]:
        return {split: {k: len(v) for k, v in getattr(self, split).items()} for split in ("train", "val")}


def _sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _ums_docs(records, rng: np.random.Generator, cfg: ReportLMConfig, full_p: float = 1.0
              ) -> tuple[list[str], list[tuple[str, list[str] | None]]]:
    """Each record -> a full-target doc (with p ``full_p``) and a field-query doc (p ``field_query_fraction``)."""
    from medvlp.knowledge.field_query import DEFAULT_PROMPT, field_query_prompt, sample_fields
    from medvlp.knowledge.ums import render_target

    docs, probes = [], []
    for rec in records:
        if rng.random() < full_p:
            docs.append(DEFAULT_PROMPT + render_target(rec))
            probes.append((DEFAULT_PROMPT, None))
        if rng.random() < cfg.field_query_fraction:
            fields = sample_fields(rec, rng)
            if fields:
                prompt = field_query_prompt(fields, rec.modality)
                docs.append(prompt + render_target(rec, fields))
                probes.append((prompt, fields))
    return docs, probes


def build_corpus(cfg: ReportLMConfig, root: str | Path | None = None) -> Corpus:
    """The real corpus: IU X-ray report text, and UMS JSON from IU (rules labeler), NIH and PneumoniaMNIST."""
    from medvlp.data import load_dataset
    from medvlp.data.iu_xray import load_iu_reports, report_text
    from medvlp.data.nih import load_nih_label_table
    from medvlp.data.root import find_file
    from medvlp.knowledge.compilers import compile_nih, compile_pneumoniamnist
    from medvlp.knowledge.labeler import label_report

    rng = np.random.default_rng(cfg.seed)
    c = Corpus()
    # IU X-ray: R2Gen val/test studies are validation; everything else (incl. unsplit studies) trains.
    iu = load_iu_reports(root)
    c.files += list(iu.attrs["files"])
    iu = iu[~iu["empty_report"]]
    iu_val = iu["r2gen_split"].isin(["val", "test"]).to_numpy()
    for split, part in (("train", iu[~iu_val]), ("val", iu[iu_val])):
        rows = part.to_dict("records")
        getattr(c, split)["iu_report_text"] = [report_text(r) for r in rows] * (
            cfg.report_text_repeats if split == "train" else 1)
        recs = [label_report(r["findings"], r["impression"], record_id=str(r["uid"])) for r in rows]
        docs, probes = _ums_docs(recs, rng, cfg, full_p=cfg.iu_ums_full_fraction)
        getattr(c, split)["iu_ums_json"] = docs
        if split == "val":
            c.probes += probes
    # NIH ChestX-ray14 full label table: patient-wise validation hold-out.
    table = load_nih_label_table(root)
    c.files.append(str(find_file("nih_chestxray14/Data_Entry_2017_v2020.csv.gz", root)))
    patients = table["patient_id"].unique()
    val_patients = set(rng.choice(patients, size=max(1, int(len(patients) * cfg.nih_val_patient_fraction)),
                                  replace=False).tolist())
    is_val = table["patient_id"].isin(val_patients).to_numpy()
    for split, n in (("train", cfg.nih_records), ("val", max(1, cfg.nih_records // 20))):
        pool = np.flatnonzero(is_val if split == "val" else ~is_val)
        pick = rng.choice(pool, size=min(n, len(pool)), replace=False)
        recs = [compile_nih(table["finding_labels"].iat[i], record_id=str(table["image_index"].iat[i]),
                            view=table["view_position"].iat[i]) for i in pick]
        docs, probes = _ums_docs(recs, rng, cfg)
        getattr(c, split)["nih_ums_json"] = docs
        if split == "val":
            c.probes += probes
    # PneumoniaMNIST labels (train split -> train, val split -> val).
    pm = load_dataset("pneumoniamnist", root)
    c.files.append(str(pm.source))
    labels = np.asarray(pm.labels).reshape(-1)
    for split, n in (("train", cfg.pneumoniamnist_records), ("val", max(1, cfg.pneumoniamnist_records // 10))):
        pool = np.flatnonzero(pm.split == split)
        pick = rng.choice(pool, size=min(n, len(pool)), replace=False)
        recs = [compile_pneumoniamnist(int(labels[i]), record_id=f"pneumoniamnist-{i}") for i in pick]
        docs, probes = _ums_docs(recs, rng, cfg)
        getattr(c, split)["pneumoniamnist_ums_json"] = docs
        if split == "val":
            c.probes += probes[:8]
    return c


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with JSON-aware pre-tokenisation, as a ``PreTrainedTokenizerFast`` (no auto BOS/EOS)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if vocab_size < 300:
        raise ConfigError(f"reportlm vocab_size={vocab_size}: needs >= 300 (256 bytes + specials + merges)")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(JSON_AWARE_SPLIT), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=list(SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>",
                                   eos_token="<eos>", model_max_length=2048, padding_side="right")


def _pack(tokenizer, docs: list[str], block: int) -> torch.Tensor:
    """Concatenate ``doc + <eos>`` streams into ``(n_blocks, block + 1)`` rows (next-token targets inside)."""
    ids: list[int] = []
    for enc in tokenizer(docs, add_special_tokens=False)["input_ids"]:
        ids += enc + [tokenizer.eos_token_id]
    n = max(1, (len(ids) - 1) // block)
    ids += [tokenizer.eos_token_id] * (n * block + 1 - len(ids))
    t = torch.tensor(ids[: n * block + 1])
    return torch.stack([t[i * block: (i + 1) * block + 1] for i in range(n)])


def _lm_loss(model, rows: torch.Tensor) -> torch.Tensor:
    logits = model(input_ids=rows[:, :-1]).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), rows[:, 1:].reshape(-1))


@torch.no_grad()
def _eval_loss(model, blocks: torch.Tensor, batch: int = 16) -> float:
    was_training = model.training
    model.eval()
    losses = [_lm_loss(model, blocks[i:i + batch]).item() * len(blocks[i:i + batch])
              for i in range(0, len(blocks), batch)]
    model.train(was_training)
    return float(sum(losses) / max(1, len(blocks)))


def check_json(text: str, fields: list[str] | None = None) -> dict[str, bool]:
    """``json_valid``: parses as a JSON object; ``schema_valid``: keys modality/findings/study_view,
    every state in present|absent|uncertain|null, view in AP|PA|LAT|null and, for a field query,
    exactly the requested findings."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return {"json_valid": False, "schema_valid": False}
    ok = isinstance(obj, dict) and set(obj) == {"modality", "findings", "study_view"}
    if ok:
        f = obj["findings"]
        ok = isinstance(f, dict) and all(isinstance(v, dict) and set(v) == {"state"} and
                                         v["state"] in ("present", "absent", "uncertain", None) for v in f.values())
        ok = ok and obj["study_view"] in ("AP", "PA", "LAT", None)
        ok = ok and (fields is None or list(f) == list(fields))
    return {"json_valid": isinstance(obj, dict), "schema_valid": bool(ok)}


def greedy_validity(lm: CausalLM, probes: list[tuple[str, list[str] | None]], *, max_new_tokens: int = 320,
                    batch: int = 8) -> dict[str, Any]:
    """JSON and schema validity of greedy continuations of UMS prompts (no visual prefix)."""
    results, examples = [], []
    for i in range(0, len(probes), batch):
        chunk = probes[i:i + batch]
        outs = lm.generate([p for p, _ in chunk], max_new_tokens=max_new_tokens)
        for (prompt, fields), out in zip(chunk, outs):
            results.append({**check_json(out, fields), "kind": "full" if fields is None else "field_query"})
            if len(examples) < 3:
                examples.append({"prompt": prompt, "output": out})

    def rates(rs: list[dict[str, Any]]) -> dict[str, Any]:
        n = max(1, len(rs))
        return {"n": len(rs), "json_valid_rate": sum(r["json_valid"] for r in rs) / n,
                "schema_valid_rate": sum(r["schema_valid"] for r in rs) / n}

    by_kind = {k: rates([r for r in results if r["kind"] == k]) for k in ("full", "field_query")}
    return {**rates(results), "by_kind": by_kind, "examples": examples}


def _progress(step: int, elapsed: float, cfg: ReportLMConfig) -> float:
    p = step / cfg.max_steps
    return max(p, elapsed / cfg.time_budget_s) if cfg.time_budget_s else p


def _lr_at(step: int, progress: float, cfg: ReportLMConfig) -> float:
    """Linear warmup over ``warmup_steps``, then cosine from ``lr`` to ``min_lr_ratio * lr`` over ``progress``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    w = cfg.warmup_steps / cfg.max_steps
    progress = (progress - w) / max(1e-9, 1 - w)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _load_avg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return None


def train_report_lm(out_dir: str | Path, *, config: ReportLMConfig | None = None, root: str | Path | None = None,
                    corpus: Corpus | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the report LM and write the HF folder + ``medvlp_reportlm.json`` into ``out_dir``.

    ``corpus`` replaces the real corpus (tests); otherwise it is built from the data root. Returns the
    metadata dict (also written to ``medvlp_reportlm.json``).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    from medvlp.utils import machine_info, seed_everything

    cfg = ReportLMConfig(**{**(config or ReportLMConfig()).model_dump(), **overrides})
    if cfg.hidden_size % cfg.num_heads:
        raise ConfigError(f"reportlm hidden_size={cfg.hidden_size} is not divisible by num_heads={cfg.num_heads}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0, load_at_start = time.time(), _load_avg()
    seed_everything(cfg.seed)
    corpus = corpus if corpus is not None else build_corpus(cfg, root)
    train_docs = [d for docs in corpus.train.values() for d in docs]
    if not train_docs:
        raise ConfigError("reportlm: the training corpus is empty")
    tokenizer = train_tokenizer(train_docs, cfg.vocab_size)
    order = np.random.default_rng(cfg.seed).permutation(len(train_docs))
    train_blocks = _pack(tokenizer, [train_docs[i] for i in order], cfg.block_size)
    val_by_source = {k: _pack(tokenizer, v, cfg.block_size)[: cfg.val_blocks] for k, v in corpus.val.items() if v}
    n_train_tokens = int(train_blocks.shape[0] * cfg.block_size)
    log.info("reportlm corpus: %s; %d train tokens in %d blocks", corpus.counts(), n_train_tokens, len(train_blocks))

    seed_everything(cfg.seed)
    mcfg = LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                       num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_heads,
                       num_key_value_heads=cfg.num_heads, max_position_embeddings=2048, tie_word_embeddings=True,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    model = LlamaForCausalLM(mcfg)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    history, stopped_by, train_t0, step = [], "max_steps", time.time(), 0
    running = None
    for step in range(cfg.max_steps):
        idx = torch.randint(len(train_blocks), (cfg.batch_size,), generator=gen)
        progress = _progress(step, time.time() - train_t0, cfg)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, progress, cfg)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=cfg.bf16_autocast):
            loss = _lm_loss(model, train_blocks[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        last = step + 1 == cfg.max_steps
        over = _progress(step + 1, time.time() - train_t0, cfg) >= 1.0 and not last
        if (step + 1) % cfg.eval_every == 0 or last or over:
            val = {k: round(_eval_loss(model, b), 4) for k, b in val_by_source.items()}
            history.append({"step": step + 1, "train_loss_ema": round(running, 4), "val_loss": val,
                            "elapsed_s": round(time.time() - train_t0, 1)})
            log.info("reportlm step %d: %s", step + 1, history[-1])
        if over and not last:
            stopped_by = f"time_budget_s={cfg.time_budget_s} after {step + 1} steps"
            break
    train_time = time.time() - train_t0
    # Every number below is measured on the weights as shipped (fp16 storage, loaded as fp32).
    model.eval().half().float()
    final_train = _eval_loss(model, train_blocks[torch.randperm(len(train_blocks), generator=gen)[: cfg.val_blocks]])
    final_val = {k: _eval_loss(model, b) for k, b in val_by_source.items()}
    all_val = torch.cat(list(val_by_source.values())) if val_by_source else None
    final_val_all = _eval_loss(model, all_val) if all_val is not None else None
    lm = CausalLM(model, tokenizer, source="medvlp-reportlm (training run)")
    probes = [corpus.probes[i] for i in np.random.default_rng(cfg.seed + 1).permutation(len(corpus.probes))]
    validity = greedy_validity(lm, probes[: cfg.greedy_samples], max_new_tokens=cfg.max_new_tokens)

    model.half().save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    files = sorted(str(p) for p in corpus.files)
    meta = {
        "format": "medvlp-reportlm", "version": REPORTLM_VERSION,
        "what": "small Llama-style causal LM, the offline frozen teacher for VIVID-Med (stands in for "
                "Qwen/Qwen2.5-1.5B-Instruct); weights stored fp16, loaded fp32",
        "training_config": cfg.model_dump(),
        "command": "medvlp lm train --out DIR",
        "data": {Path(f).name: _sha256(f) for f in files},
        "corpus_counts": corpus.counts(), "train_tokens": n_train_tokens,
        "tokens_seen": int((step + 1) * cfg.batch_size * cfg.block_size),
        "params": int(n_params), "vocab_size": len(tokenizer),
        "steps": step + 1, "stopped_by": stopped_by, "train_time_s": round(train_time, 1),
        "total_time_s": round(time.time() - t0, 1),
        "final_train_loss": round(final_train, 4),
        "final_val_loss": None if final_val_all is None else round(final_val_all, 4),
        "final_val_loss_by_source": {k: round(v, 4) for k, v in final_val.items()},
        "greedy_json": validity, "history": history,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the load average matters on a shared box: train_time_s and steps depend on it
        "machine": {**machine_info(), "load_avg_at_start": load_at_start, "load_avg_at_end": _load_avg()},
    }
    (out / REPORTLM_META).write_text(json.dumps(meta, indent=2) + "\n")
    meta["size_bytes"] = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    return meta


def run_lm_train(out_dir: str | Path, **options: Any) -> dict[str, Any]:
    """CLI entry (``medvlp lm train --out DIR [--set key=value ...]``): options are ReportLMConfig fields,
    plus ``root`` (data root). Returns the metadata summary."""
    root = options.pop("root", None)
    unknown = sorted(set(options) - set(ReportLMConfig.model_fields))
    if unknown:
        raise ConfigError(f"medvlp lm train: unknown option(s) {unknown}; known: {sorted(ReportLMConfig.model_fields)}")
    return train_report_lm(out_dir, config=ReportLMConfig(**options), root=root)
