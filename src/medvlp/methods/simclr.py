"""SimCLR (Chen et al. 2020): the pair-wise contrastive baseline of LVM-Med, in the same harness.

Same collection, same two-view augmentation and same pooled features as
:mod:`medvlp.methods.lvmmed` (options :class:`~medvlp.methods.lvmmed.ViewOptions`); a 2-layer MLP
projector and the NT-Xent loss (:func:`medvlp.losses.info_nce.nt_xent`) replace the graphs.
"""
from __future__ import annotations

import torch
from pydantic import Field

from medvlp.losses.info_nce import nt_xent
from medvlp.methods.base import Method
from medvlp.methods.lvmmed import ViewOptions, parse_options, two_view_data
from medvlp.methods.registry import BuildContext, MethodBuild
from medvlp.models.heads import MLPProjector


class SimCLROptions(ViewOptions):
    proj_dim: int = Field(128, ge=2)
    hidden_dim: int = Field(512, ge=2)
    temperature: float = Field(0.2, gt=0)


class SimCLRMethod(Method):
    def __init__(self, backbone, opts: SimCLROptions):
        super().__init__()
        self.backbone, self.opts = backbone, opts
        self.projector = MLPProjector(backbone.feature_dim, opts.hidden_dim, opts.proj_dim, num_layers=2)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        b = batch["view1"].shape[0]
        z = self.projector(self.backbone.pooled(torch.cat([batch["view1"], batch["view2"]])))
        loss = nt_xent(z[:b], z[b:], self.opts.temperature)
        with torch.no_grad():
            zn = torch.nn.functional.normalize(z, dim=-1)
            acc = ((zn[:b] @ zn[b:].T).argmax(1) == torch.arange(b, device=z.device)).float().mean()
        return {"loss": loss, "match_acc": acc}


def build(ctx: BuildContext) -> MethodBuild:
    opts = parse_options(SimCLROptions, ctx.options, "simclr")
    dataset, meta = two_view_data(ctx, opts)
    return MethodBuild(method=SimCLRMethod(ctx.backbone, opts), dataset=dataset,
                       metadata={**meta, "simclr_options": opts.model_dump()})
