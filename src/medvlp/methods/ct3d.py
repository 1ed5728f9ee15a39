"""3D CT MLLM with a text-guided hierarchical MoE (TGH-MoE), for VQA and report generation.

RECONSTRUCTION of arXiv 2604.10233 (only its abstract is known; METHODS.md §3.2 [inferred]):

    volume -> VolumeViT (2D ViT weights reused; per-slice then 3D attention; TGH-MoE FFNs
    guided by the prompt embedding) -> adaptive 3D pooling to <= n_visual_tokens ->
    MLPProjector connector -> frozen causal LM, sequence [visual | prompt | answer <eos>]

    L = CE(answer tokens only) + aux_weight * L_aux(load balance) + router_supervision * CE(pi, task group)

- The prompt embedding ``p`` is the mean of the frozen LM's input embeddings of the instruction
  (METHODS.md §3.2: "mean-pooled from the LLM's token embeddings").
- ``router_supervision`` (a switch, 0 turns it off) adds CE between the level-1 task gates and
  the item's task group (report vs VQA by default): the abstract says the router is "guided
  by the text prompt" to "distinguish tasks"; whether it was supervised is unknown.
- Two-stage training inside one run: the first ``stage1_steps`` training forwards use the
  task-shared expert with routing off (stage 1); then every expert is copied from the shared one
  (untied) and the routers train (stage 2). ``stage1_steps=0`` is one-stage training.
- The LM stays frozen; ``lm_lora_rank > 0`` adds LoRA to its linears (then only the LoRA
  matrices are saved). The LM itself is never saved, only named (``ct3d.json``).

``medvlp pretrain --method ct3d`` ignores ``ctx.train_set`` (the run's 2D data): the method builds
its own CT VQA/report set (:mod:`medvlp.data.ct_vqa`, text DERIVED from labels) from
``ctx.data_root``; ``ctx.backbone`` is the 2D ViT to transfer (``model.pretrained`` = a 2D folder).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn
from torch.nn.utils.rnn import pad_sequence

from medvlp.config import StrictConfig
from medvlp.data.ct_vqa import DERIVED_NOTE, CTItem, CTVQASet
from medvlp.errors import ConfigError, DataError
from medvlp.methods.base import Method
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models.backbone import Backbone
from medvlp.models.heads import MLPProjector
from medvlp.models.volume_vit import VolumeViT

RECONSTRUCTION_NOTE = ("TGH-MoE 3D MLLM reconstructed from the abstract of arXiv 2604.10233 (no code, "
                       "no PDF tables); architecture choices are medvlp's, see docs/ct3d.md")
CONFIG_FILE, WEIGHTS_FILE = "ct3d.json", "ct3d.safetensors"


class CT3DOptions(StrictConfig):
    """``method.options`` of ``--method ct3d`` (every uncertain choice of the paper is one)."""

    n_3d_blocks: int = 2
    depth_pos: Literal["rope", "embed", "none"] = "rope"
    slice_patch: int = 1
    depth: int | None = None                 # keep only the first `depth` 2D blocks (CPU size)
    train_encoder: Literal["all", "top"] = "all"  # "top": per-slice blocks + patch/pos embedding frozen
    moe: bool = True
    moe_blocks: list[int] | None = None      # default: the top 2 blocks
    num_groups: int = 2
    experts_per_group: int = 2
    top_k: int = 1
    expert: Literal["ffn", "lora"] = "lora"
    expert_hidden: int = 64
    lora_rank: int = 4
    renorm_topk: bool = True
    task_groups: dict[str, int] = Field(default_factory=lambda: {"report": 0, "closed": 1, "open": 1})
    router_supervision: float = 0.1
    aux_weight: float = 0.01
    stage1_steps: int = 0
    lm: str = "reportlm"                     # "reportlm" | "tiny" | a folder | a hub name
    lm_random_init: bool = False
    lm_lora_rank: int = 0                    # 0: LM fully frozen; r > 0: LoRA on all its linears
    tiny_lm_hidden: int = 64
    n_visual_tokens: int = 32
    connector_hidden: int = 256
    slices: int = 16
    sources: list[str] = Field(default_factory=lambda: ["adrenalmnist3d", "totalseg"])
    limit_train: int | None = None
    max_answer_tokens: int = 200


class LoRALinear(nn.Module):
    """``base(x) + (alpha/r) * B A x`` around a frozen ``nn.Linear``; B starts at zero."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float = 16.0):
        super().__init__()
        self.base = base
        self.lora_a = nn.Parameter(torch.randn(rank, base.in_features) / base.in_features ** 0.5)
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.scale * (x @ self.lora_a.t()) @ self.lora_b.t()


def add_lm_lora(lm: nn.Module, rank: int) -> list[str]:
    """Wrap every ``nn.Linear`` of the LM (attention, MLP, output head) with LoRA; returns names."""
    names = [n for n, m in lm.model.named_modules() if isinstance(m, nn.Linear)]
    for n in names:
        parent, _, child = n.rpartition(".")
        owner = lm.model.get_submodule(parent) if parent else lm.model
        setattr(owner, child, LoRALinear(getattr(owner, child), rank))
    return names


def load_lm(name: str, *, random_init: bool = False, tiny_hidden: int = 64) -> nn.Module:
    """The frozen causal LM (interface A); ``"tiny"`` = a tiny random Llama for tests and CPU benches."""
    from medvlp.models.causal_lm import load_causal_lm, tiny_causal_lm

    with torch.random.fork_rng():  # the LM builders seed the global RNG
        if name == "tiny":
            return tiny_causal_lm(hidden_size=tiny_hidden, num_layers=2, seed=0)
        return load_causal_lm(None if name == "reportlm" else name, random_init=random_init)


def _eos(tok) -> int:
    eos = getattr(tok, "eos_token_id", None)
    return int(eos if eos is not None else tok.sep_token_id)


class CT3DMethod(Method):
    def __init__(self, backbone: Backbone, lm: nn.Module, opts: CT3DOptions):
        super().__init__()
        self.opts = opts
        self.lm = lm
        self.freeze(self.lm)
        self.lm_lora = add_lm_lora(lm, opts.lm_lora_rank) if opts.lm_lora_rank > 0 else []
        moe_blocks = None
        if opts.moe:
            depth = opts.depth or len(backbone.model.blocks)
            moe_blocks = opts.moe_blocks if opts.moe_blocks is not None else [depth - 2, depth - 1]
        self.encoder = VolumeViT(
            backbone, n_3d_blocks=opts.n_3d_blocks, depth_pos=opts.depth_pos, slice_patch=opts.slice_patch,
            depth=opts.depth, moe_blocks=moe_blocks, prompt_dim=lm.hidden_size,
            moe_kwargs=dict(num_groups=opts.num_groups, experts_per_group=opts.experts_per_group,
                            top_k=opts.top_k, expert=opts.expert, expert_hidden=opts.expert_hidden,
                            lora_rank=opts.lora_rank, renorm_topk=opts.renorm_topk,
                            mode="shared" if opts.stage1_steps > 0 else "routed"))
        self.backbone = backbone  # the engine/pretrain saves this (the transferred 2D weights)
        if opts.train_encoder == "top":
            vit = backbone.model
            for name in ("patch_embed", "norm_pre", "patch_drop"):
                getattr(vit, name).requires_grad_(False)
            for attr in ("cls_token", "pos_embed", "reg_token"):
                if getattr(vit, attr, None) is not None:
                    getattr(vit, attr).requires_grad_(False)
            for i in range(self.encoder.first_3d_block):
                if str(i) not in self.encoder.moe:
                    vit.blocks[i].requires_grad_(False)
        self.connector = MLPProjector(backbone.feature_dim, opts.connector_hidden, lm.hidden_size,
                                      norm="ln", act="gelu")
        if any(g >= opts.num_groups or g < 0 for g in opts.task_groups.values()):
            raise ConfigError(f"task_groups={opts.task_groups}: group ids must be < num_groups={opts.num_groups}")
        # Training progress decides the stage; both go into checkpoints via extra_state().
        self.register_buffer("train_forwards", torch.zeros((), dtype=torch.long))
        self.register_buffer("experts_untied", torch.zeros((), dtype=torch.long))
        self.tokenizer = lm.tokenizer
        self.eos_id = _eos(self.tokenizer)

    # ---- stages -------------------------------------------------------------------------
    @property
    def stage(self) -> int:
        return 1 if int(self.train_forwards) < self.opts.stage1_steps else 2

    def _sync_stage(self) -> None:
        want = "shared" if self.stage == 1 else "routed"
        if want == "routed" and self.opts.stage1_steps > 0 and not int(self.experts_untied):
            for moe in self.encoder.moe.values():
                moe.untie_from_shared()
            self.experts_untied.fill_(1)
        for moe in self.encoder.moe.values():
            moe.set_mode(want)

    def extra_state(self) -> dict[str, torch.Tensor]:
        return {"train_forwards": self.train_forwards.clone(), "experts_untied": self.experts_untied.clone()}

    def load_extra_state(self, state: dict[str, torch.Tensor]) -> None:
        self.train_forwards.fill_(int(state["train_forwards"]))
        self.experts_untied.fill_(int(state["experts_untied"]))
        self._sync_stage()

    # ---- pieces -------------------------------------------------------------------------
    def prompt_embedding(self, prompt_ids: torch.Tensor, prompt_len: torch.Tensor) -> torch.Tensor:
        """Mean of the frozen LM's token embeddings over the true prompt tokens: (B, H_lm)."""
        mask = (torch.arange(prompt_ids.shape[1], device=prompt_ids.device)[None] < prompt_len[:, None]).float()
        emb = self.lm.embed(prompt_ids).detach()
        return (emb * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp_min(1)

    def visual_tokens(self, volume: torch.Tensor, prompt_emb: torch.Tensor | None) -> torch.Tensor:
        """(B, S, H, W) -> (B, <= n_visual_tokens, H_lm)."""
        x = self.encoder(volume, prompt_emb if self.encoder.moe else None)
        b, s, n, d = x.shape
        npre = self.encoder.num_prefix_tokens
        side = int(round((n - npre) ** 0.5))
        grid = x[:, :, npre:].reshape(b, s, side, side, d).permute(0, 4, 1, 2, 3)
        gs, gh = _pool_grid(self.opts.n_visual_tokens, s, side)
        pooled = F.adaptive_avg_pool3d(grid, (gs, gh, gh)).flatten(2).transpose(1, 2)
        return self.connector(pooled)

    def _sequence(self, vis: torch.Tensor, prompt_ids, prompt_len, answer_ids=None, answer_len=None):
        """Right-padded [visual | prompt | answer] embeddings, attention mask and labels."""
        rows, labels = [], []
        for i in range(vis.shape[0]):
            p = prompt_ids[i, :prompt_len[i]]
            parts = [vis[i], self.lm.embed(p[None])[0]]
            lab = [torch.full((vis.shape[1] + len(p),), -100, dtype=torch.long, device=vis.device)]
            if answer_ids is not None:
                a = answer_ids[i, :answer_len[i]]
                parts.append(self.lm.embed(a[None])[0])
                lab.append(a)
            rows.append(torch.cat(parts))
            labels.append(torch.cat(lab))
        lengths = torch.tensor([len(r) for r in rows], device=vis.device)
        emb = pad_sequence(rows, batch_first=True)
        mask = (torch.arange(emb.shape[1], device=vis.device)[None] < lengths[:, None]).long()
        return emb, mask, pad_sequence(labels, batch_first=True, padding_value=-100)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.training:
            self._sync_stage()
        p_emb = self.prompt_embedding(batch["prompt_ids"], batch["prompt_len"])
        vis = self.visual_tokens(batch["volume"], p_emb)
        emb, mask, labels = self._sequence(vis, batch["prompt_ids"], batch["prompt_len"],
                                           batch["answer_ids"], batch["answer_len"])
        logits = self.lm(inputs_embeds=emb, attention_mask=mask)
        ce = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
        out = {"ce": ce.detach()}
        loss = ce
        routed = [m for m in self.encoder.moe.values() if m.mode == "routed"]
        if routed:
            aux = torch.stack([m.aux_loss for m in routed]).mean()
            loss = loss + self.opts.aux_weight * aux
            out["aux"] = aux.detach()
            if self.opts.router_supervision > 0:
                sup = torch.stack([F.nll_loss(m.last_group_probs.clamp_min(1e-8).log(), batch["task_group"])
                                   for m in routed]).mean()
                loss = loss + self.opts.router_supervision * sup
                out["router_ce"] = sup.detach()
        out["stage"] = torch.tensor(float(self.stage))
        if self.training:
            self.train_forwards += 1
        out["loss"] = loss
        return out

    # ---- inference ----------------------------------------------------------------------
    def encode_text(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids = [torch.tensor(self.tokenizer(t, add_special_tokens=False)["input_ids"] or [self.eos_id])
               for t in texts]
        return pad_sequence(ids, batch_first=True, padding_value=0), torch.tensor([len(i) for i in ids])

    @torch.no_grad()
    def generate(self, volume: torch.Tensor, prompts: list[str], max_new_tokens: int = 64) -> list[str]:
        """Greedy answers (text after the prompt) for ``volume`` (B, S, H, W) and ``prompts``."""
        self._sync_stage()
        dev = volume.device
        pid, plen = (t.to(dev) for t in self.encode_text(prompts))
        vis = self.visual_tokens(volume, self.prompt_embedding(pid, plen))
        emb, mask, _ = self._sequence(vis, pid, plen)
        # left-align: move padding to the front so every row's next token is at the end;
        # positions count true tokens only, as in training (right padding, positions from 0)
        lengths = mask.sum(1)
        shift = emb.shape[1] - lengths
        idx = (torch.arange(emb.shape[1], device=dev)[None] - shift[:, None]) % emb.shape[1]
        emb = torch.gather(emb, 1, idx[..., None].expand_as(emb))
        mask = torch.gather(mask, 1, idx)
        model = self.lm.model
        out = model(inputs_embeds=emb, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0),
                    use_cache=True)
        past, done = out.past_key_values, torch.zeros(len(prompts), dtype=torch.bool, device=dev)
        tokens: list[list[int]] = [[] for _ in prompts]
        nxt = out.logits[:, -1].argmax(-1)
        for _ in range(max_new_tokens):
            for i, t in enumerate(nxt.tolist()):
                if not done[i]:
                    if t == self.eos_id:
                        done[i] = True
                    else:
                        tokens[i].append(t)
            if bool(done.all()):
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
            out = model(inputs_embeds=self.lm.embed(nxt[:, None]), attention_mask=mask,
                        position_ids=(mask.sum(1, keepdim=True) - 1), past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
        return [self.tokenizer.decode(t, skip_special_tokens=True).strip() for t in tokens]

    @torch.no_grad()
    def answer_logprob(self, volume: torch.Tensor, prompts: list[str], answers: list[str]) -> torch.Tensor:
        """Sum of log p(answer tokens + eos | volume, prompt) per row (for scores / AUC)."""
        self._sync_stage()
        dev = volume.device
        pid, plen = (t.to(dev) for t in self.encode_text(prompts))
        aid, alen = self.encode_text(answers)
        aid = torch.cat([aid, torch.zeros_like(aid[:, :1])], 1)
        aid[torch.arange(len(answers)), alen] = self.eos_id
        vis = self.visual_tokens(volume, self.prompt_embedding(pid, plen))
        emb, mask, labels = self._sequence(vis, pid, plen, aid.to(dev), (alen + 1).to(dev))
        logp = self.lm(inputs_embeds=emb, attention_mask=mask)[:, :-1].float().log_softmax(-1)
        lab = labels[:, 1:]
        tok = logp.gather(-1, lab.clamp_min(0)[..., None])[..., 0]
        return (tok * (lab != -100)).sum(1)


def _pool_grid(n_tokens: int, s: int, side: int) -> tuple[int, int]:
    """(slices, side) of the pooled grid with slices * side^2 <= n_tokens, keeping depth first."""
    gh = max(1, min(side, int((n_tokens / min(s, n_tokens)) ** 0.5)))
    gs = max(1, min(s, n_tokens // (gh * gh)))
    return gs, gh


class CTVQADataset(torch.utils.data.Dataset):
    """Items of a :class:`CTVQASet` as {volume, prompt, answer, task_group} (text derived)."""

    def __init__(self, data: CTVQASet, items: list[CTItem], task_groups: dict[str, int]):
        if not items:
            raise DataError(None, "no CT VQA/report items for this split", "at least one item")
        self.data, self.items, self.task_groups = data, items, task_groups

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        it = self.items[i]
        return {"volume": torch.from_numpy(self.data.volumes[it.volume]), "prompt": it.prompt(),
                "answer": " " + it.answer, "task_group": self.task_groups[it.task]}


class Collate:
    """Tokenises prompts and answers (answer + eos), pads right; tensors only."""

    def __init__(self, tokenizer, max_answer_tokens: int = 200):
        self.tok, self.max_a, self.eos = tokenizer, max_answer_tokens, _eos(tokenizer)

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        p = [torch.tensor(self.tok(r["prompt"], add_special_tokens=False)["input_ids"]) for r in rows]
        a = [torch.tensor(self.tok(r["answer"], add_special_tokens=False)["input_ids"][:self.max_a] + [self.eos])
             for r in rows]
        return {"volume": torch.stack([r["volume"] for r in rows]),
                "prompt_ids": pad_sequence(p, batch_first=True), "prompt_len": torch.tensor([len(x) for x in p]),
                "answer_ids": pad_sequence(a, batch_first=True), "answer_len": torch.tensor([len(x) for x in a]),
                "task_group": torch.tensor([r["task_group"] for r in rows])}


def build_method(backbone: Backbone, opts: CT3DOptions | dict[str, Any]) -> CT3DMethod:
    opts = opts if isinstance(opts, CT3DOptions) else CT3DOptions(**opts)
    return CT3DMethod(backbone, load_lm(opts.lm, random_init=opts.lm_random_init, tiny_hidden=opts.tiny_lm_hidden), opts)


def save_model(method: CT3DMethod, folder: str | Path, metadata: dict[str, Any] | None = None,
               write_backbone: bool = True) -> Path:
    """Backbone folder (2D weights as transferred/trained) + ``ct3d.json`` + ``ct3d.safetensors``
    (depth embedding, MoE, connector). The frozen LM is named, never saved."""
    from safetensors.torch import save_file

    from medvlp.models import save_pretrained

    folder = Path(folder)
    if write_backbone:
        save_pretrained(method.backbone, folder, metadata=metadata or {})
    state = {f"encoder.{k}": v for k, v in method.encoder.state_dict().items() if not k.startswith("backbone.")}
    state.update({f"connector.{k}": v for k, v in method.connector.state_dict().items()})
    state.update({f"lm.{n}": p for n, p in method.lm.named_parameters() if "lora_" in n})
    state.update({f"extra.{k}": v for k, v in method.extra_state().items()})
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE))
    (folder / CONFIG_FILE).write_text(json.dumps({
        "format": "medvlp-ct3d-1", "options": method.opts.model_dump(), "lm_source": method.lm.source,
        "encoder": method.encoder.config(), "note": RECONSTRUCTION_NOTE, "text": DERIVED_NOTE}, indent=2))
    return folder


def load_model(folder: str | Path) -> CT3DMethod:
    """Rebuild a saved ct3d model (eval mode); the LM is loaded by name, frozen."""
    from safetensors.torch import load_file

    from medvlp.models import from_pretrained

    folder = Path(folder)
    cfg_path = folder / CONFIG_FILE
    if not cfg_path.is_file():
        raise DataError(cfg_path, "missing", "a ct3d model folder written by medvlp pretrain --method ct3d")
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("format") != "medvlp-ct3d-1":
        raise DataError(cfg_path, f"format {cfg.get('format')!r}", "format 'medvlp-ct3d-1'")
    method = build_method(from_pretrained(folder), cfg["options"])
    if method.lm.source != cfg["lm_source"]:
        raise DataError(cfg_path, f"was trained with LM {cfg['lm_source']!r} but {method.lm.source!r} loads now",
                        "the same frozen LM as in training")
    state = load_file(str(folder / WEIGHTS_FILE))
    enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    con = {k[len("connector."):]: v for k, v in state.items() if k.startswith("connector.")}
    missing, unexpected = method.encoder.load_state_dict(enc, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise DataError(folder / WEIGHTS_FILE, f"encoder keys missing {missing[:5]} unexpected {unexpected[:5]}",
                        "weights written by save_model for the same options")
    method.connector.load_state_dict(con)
    lora = {k[len("lm."):]: v for k, v in state.items() if k.startswith("lm.")}
    if lora:
        missing, unexpected = method.lm.load_state_dict(lora, strict=False)
        if unexpected or any("lora_" in k for k in missing):
            raise DataError(folder / WEIGHTS_FILE, "LM LoRA keys do not match", "same lm_lora_rank")
    method.load_extra_state({k[len("extra."):]: v for k, v in state.items() if k.startswith("extra.")})
    return method.eval()


def build(ctx: BuildContext) -> MethodBuild:
    """``medvlp pretrain --method ct3d``: the run's backbone is the 2D ViT to transfer; the CT
    VQA/report data come from ``ctx.data_root`` (``ctx.train_set`` is not used)."""
    from medvlp.data.ct_vqa import build_ct_vqa

    opts = CT3DOptions(**ctx.options)
    method = build_method(ctx.backbone, opts)
    img = ctx.backbone.img_size
    data = build_ct_vqa(ctx.data_root, shape=(opts.slices, img, img), sources=tuple(opts.sources),
                        seed=ctx.seed, limit_train=opts.limit_train)
    ds = CTVQADataset(data, data.split_items("train"), opts.task_groups)

    def save_extra(folder: Path) -> None:
        save_model(method, folder, write_backbone=False)

    return MethodBuild(method, ds, Collate(method.tokenizer, opts.max_answer_tokens),
                       parts_used={"causal_lm": f"{method.lm.source} (frozen)",
                                   "ct_text": DERIVED_NOTE, "architecture": RECONSTRUCTION_NOTE},
                       metadata={"ct3d": {"options": opts.model_dump(), "n_train_items": len(ds),
                                          "train_set_ignored": "ct3d builds its CT VQA set from data_root"}},
                       save_extra=save_extra)
