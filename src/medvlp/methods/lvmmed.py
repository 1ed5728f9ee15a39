"""LVM-Med: self-supervised second-order graph matching (NeurIPS 2023; METHODS.md §4).

Per step, the 2B views of B images go through the encoder once; pooled features are projected
(``h_φ``) to z; the batch is cut into sub-graphs of ``graph_size`` images (the paper's 16; a
3,200 batch is presumably 200 disjoint sub-graphs, METHODS.md §4.7 item 1). For each sub-graph
and each view: kNN graph on z, 2-layer GCN -> ẑ; vertex affinity ``α·cos(ẑ^s, ẑ^t) + (1-α)·local``,
edge affinity between kNN edges; a QAP solver matches the two graphs, IMLE carries the gradient of
the Hamming loss against the identity back into the affinities, the GCN, the projector and the
encoder. No other loss term.

Data: by default the multi-modality collection of :mod:`medvlp.data.collection` is built from
``options.sources`` under ``ctx.data_root`` (the run's ``data.dataset`` is then not used, and the
saved metadata says so); ``sources: null`` pretrains on the run's dataset (``ctx.train_set``:
``--set data.dataset=<name|manifest.csv|folder>``), as does a run whose dataset is already named
"collection". Views come from :class:`~medvlp.data.collection.ViewAugment` (built from the
backbone's preprocess, so ``ctx.transform`` is not used), the same for the SimCLR baseline.

Ablations of §4.5 Table 6, as options: ``second_order=False`` (LAP on c^v only),
``message_passing=False`` (ẑ = z), ``gumbel_noise=False`` (no perturbation),
``local_similarity=False`` (α = 1).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from pydantic import Field, ValidationError

from medvlp.config import StrictConfig
from medvlp.data.collection import DEFAULT_SOURCES, TwoViewDataset, ViewAugment, load_collection
from medvlp.errors import ConfigError
from medvlp.losses.graph_matching import graph_matching_loss
from medvlp.methods.base import Method
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models import matching
from medvlp.models.graph import GCN, edge_affinity, edge_list, knn_adjacency, local_affinity, vertex_affinity
from medvlp.models.heads import MLPProjector


class ViewOptions(StrictConfig):
    """The collection and the two-view augmentation (shared with the SimCLR baseline)."""

    sources: list[str] | None = Field(default_factory=lambda: list(DEFAULT_SOURCES))
    ham_limit: int | None = 2000
    collection_size: int = Field(64, ge=8)
    balance: bool = True
    crop_scale: tuple[float, float] = (0.3, 1.0)
    hflip: bool = True          # the paper flips with p=0.5 (all modalities)
    jitter: float = Field(0.4, ge=0)
    blur_p: float = Field(0.5, ge=0, le=1)


class LVMMedOptions(ViewOptions):
    proj_dim: int = Field(128, ge=2)
    projector_layers: int = Field(1, ge=1)   # the paper's h_φ is 2048x128: one linear layer
    gcn_layers: int = Field(2, ge=1)
    gcn_residual: bool = True                 # ours: without it the GCN over-smooths (graph.GCN)
    graph_size: int = Field(16, ge=3)
    knn: int = Field(5, ge=1)
    directed_knn: bool = False
    alpha: float = Field(0.8, ge=0, le=1)
    gamma: int = Field(8, ge=1)               # kept local pairs (select_top); the paper gives none
    lam: float = Field(1.0, gt=0)             # IMLE step, in cost ranges (losses/imle.py)
    noise_temp: float = Field(0.1, ge=0)      # Gumbel scale, in cost ranges
    n_samples: int = Field(1, ge=1)
    random_starts: int = Field(2, ge=0)       # extra random starts of the QAP solver
    second_order: bool = True
    message_passing: bool = True
    gumbel_noise: bool = True
    local_similarity: bool = True


def parse_options(cls: type[StrictConfig], options: dict[str, Any], method: str) -> Any:
    try:
        return cls(**options)
    except ValidationError as e:
        raise ConfigError(f"method.options for {method}:\n{e}") from e


def feature_map(backbone, feats: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """``forward_features`` output -> (B, P, C) position features and the (h, w) grid."""
    if feats.ndim == 4:  # CNN (B, C, h, w)
        return feats.flatten(2).transpose(1, 2), (feats.shape[2], feats.shape[3])
    tokens = feats[:, getattr(backbone, "num_prefix_tokens", 0):]
    side = int(math.isqrt(tokens.shape[1]))
    if side * side != tokens.shape[1]:
        raise ConfigError(f"LVM-Med local similarity needs a square patch grid; got {tokens.shape[1]} tokens")
    return tokens, (side, side)


class LVMMedMethod(Method):
    """Backbone + projector + GCN trained by graph matching; ``forward`` -> {"loss", "match_acc"}."""

    def __init__(self, backbone, opts: LVMMedOptions):
        super().__init__()
        self.backbone, self.opts = backbone, opts
        self.projector = MLPProjector(backbone.feature_dim, max(backbone.feature_dim, opts.proj_dim), opts.proj_dim,
                                      num_layers=opts.projector_layers)
        self.gcn = GCN(opts.proj_dim, num_layers=opts.gcn_layers, residual=opts.gcn_residual) if opts.message_passing else None

    def _solver(self, seed: int):
        if not self.opts.second_order:
            return lambda cv, ce, es, et: matching.lap(cv)
        return lambda cv, ce, es, et: matching.qap(cv, ce, es, et, n_random_starts=self.opts.random_starts,
                                                   seed=seed)

    def graph_loss(self, z1, z2, f1, f2, box1, box2, grid, rng) -> tuple[torch.Tensor, torch.Tensor]:
        """Loss and matching of one sub-graph pair (nodes = the rows of z1/z2)."""
        o = self.opts
        a_s = knn_adjacency(z1, o.knn, directed=o.directed_knn)
        a_t = knn_adjacency(z2, o.knn, directed=o.directed_knn)
        h1, h2 = (self.gcn(z1, a_s), self.gcn(z2, a_t)) if self.gcn is not None else (z1, z2)
        use_local = o.local_similarity and o.alpha < 1
        local = local_affinity(f1, f2, box1, box2, grid, o.gamma) if use_local else None
        cv = vertex_affinity(h1, h2, local, o.alpha)
        es, et = edge_list(a_s), edge_list(a_t)
        ce = edge_affinity(h1, h2, es, et) if o.second_order else None
        return graph_matching_loss(cv, ce, es.cpu().numpy(), et.cpu().numpy(),
                                   self._solver(int(rng.integers(2**31))), lam=o.lam,
                                   noise_temp=o.noise_temp if o.gumbel_noise else 0.0, n_samples=o.n_samples,
                                   rng=rng)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for key in ("view1", "view2", "box1", "box2"):
            if key not in batch:
                raise KeyError(f"LVMMedMethod: batch has no {key!r} (keys: {sorted(batch)}); "
                               "use the TwoViewDataset of medvlp.data.collection")
        b = batch["view1"].shape[0]
        feats = self.backbone.forward_features(torch.cat([batch["view1"], batch["view2"]]))
        z = self.projector(self.backbone.pool(feats))
        fmap, grid = feature_map(self.backbone, feats)
        # Torch's RNG drives the Gumbel noise so that a resumed run (which restores it) repeats it.
        rng = np.random.default_rng(int(torch.randint(0, 2**31 - 1, ())))
        n = self.opts.graph_size if b >= self.opts.graph_size else b
        if n < 3:
            raise ConfigError(f"LVM-Med: a batch of {b} images is too small for a graph (need >= 3)")
        losses, accs = [], []
        for start in range(0, b - n + 1, n):
            s = slice(start, start + n)
            t = slice(b + start, b + start + n)
            loss, v = self.graph_loss(z[s], z[t], fmap[s], fmap[t], batch["box1"][s], batch["box2"][s], grid, rng)
            losses.append(loss)
            accs.append(v.diagonal().mean())
        return {"loss": torch.stack(losses).mean(), "match_acc": torch.stack(accs).mean()}


def two_view_data(ctx: BuildContext, opts: ViewOptions):
    """The collection (or the run's dataset) wrapped as a :class:`TwoViewDataset`, plus metadata."""
    if opts.sources is not None and getattr(ctx.train_set, "name", None) != "collection":
        data = load_collection(ctx.data_root, sources=opts.sources, size=opts.collection_size,
                               channels=ctx.backbone.in_chans, ham_limit=opts.ham_limit)
    else:
        data = ctx.train_set
    pp = ctx.backbone.preprocess
    augment = ViewAugment(pp["img_size"], pp["in_chans"], pp["mean"], pp["std"], scale=opts.crop_scale,
                          hflip=opts.hflip, jitter=opts.jitter, blur_p=opts.blur_p)
    dataset = TwoViewDataset(data, augment, balance=opts.balance, seed=ctx.seed)
    meta = {"pretrain_data": {"dataset": data.name, "split": "train", "n_images": len(data),
                              "n_balanced": len(dataset), "source": data.source,
                              "composition": data.meta.get("sources", {data.name: len(data)})}}
    return dataset, meta


def build(ctx: BuildContext) -> MethodBuild:
    opts = parse_options(LVMMedOptions, ctx.options, "lvmmed")
    dataset, meta = two_view_data(ctx, opts)
    method = LVMMedMethod(ctx.backbone, opts)
    solver = "first-order LAP (scipy Hungarian)" if not opts.second_order else \
        "own IPFP+RRWM QAP solver with Hungarian rounding (paper: Lagrange-decomposition dual ascent)"
    return MethodBuild(method=method, dataset=dataset,
                       parts_used={"graph_matching_solver": solver},
                       metadata={**meta, "lvmmed_options": opts.model_dump()})
