"""LVM-Med and SimCLR methods: build, forward/backward, ablation switches, gradient paths."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp.errors import ConfigError
from medvlp.losses.graph_matching import graph_matching_loss
from medvlp.methods import lvmmed, simclr
from medvlp.methods.registry import BuildContext, get_method_builder
from medvlp.models import create_model, matching
from medvlp.models.graph import edge_affinity, edge_list, knn_adjacency, vertex_affinity

SMALL = {"sources": ["breastmnist"], "collection_size": 28, "graph_size": 8, "knn": 3, "proj_dim": 16}


def _ctx(model="vit_tiny_p4_28", base=SMALL, **opts):
    torch.manual_seed(0)
    return BuildContext(backbone=create_model(model), train_set=None, transform=None, options={**base, **opts})


def _batch(ds, n):
    return torch.utils.data.default_collate([ds[i] for i in range(n)])


@pytest.mark.parametrize("model", ["vit_tiny_p4_28", "resnet18_28"])
def test_lvmmed_forward_backward_reaches_encoder(model):
    built = get_method_builder("lvmmed")(_ctx(model))
    assert "QAP" in built.parts_used["graph_matching_solver"]
    assert built.metadata["pretrain_data"]["composition"] == {"breastmnist": 546}
    out = built.method(_batch(built.dataset, 16))
    assert set(out) == {"loss", "match_acc"} and 0 <= float(out["loss"].detach()) <= 2
    out["loss"].backward()
    enc = [p.grad for p in built.method.backbone.parameters() if p.grad is not None]
    assert enc and sum(float(g.abs().sum()) for g in enc) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in built.method.gcn.parameters())


@pytest.mark.parametrize("switch", ["second_order", "message_passing", "gumbel_noise", "local_similarity"])
def test_each_ablation_runs_and_changes_the_model(switch):
    built = lvmmed.build(_ctx(**{switch: False}))
    m = built.method
    assert (m.gcn is None) == (switch == "message_passing")
    out = m(_batch(built.dataset, 16))
    out["loss"].backward()
    assert torch.isfinite(out["loss"])
    if switch == "second_order":
        assert "LAP" in built.parts_used["graph_matching_solver"]


def test_gradients_reach_the_encoder_through_vertex_and_through_edge_affinities():
    built = lvmmed.build(_ctx(local_similarity=False))
    m = built.method
    batch = _batch(built.dataset, 8)
    for path in ("vertex", "edge"):
        m.zero_grad()
        z = m.projector(m.backbone.pooled(torch.cat([batch["view1"], batch["view2"]])))
        z1, z2 = z[:8], z[8:]
        a_s, a_t = knn_adjacency(z1, 3), knn_adjacency(z2, 3)
        h1, h2 = m.gcn(z1, a_s), m.gcn(z2, a_t)
        es, et = edge_list(a_s), edge_list(a_t)
        cv, ce = vertex_affinity(h1, h2, None), edge_affinity(h1, h2, es, et)
        cv, ce = (cv, ce.detach()) if path == "vertex" else (cv.detach(), ce)
        loss, v = graph_matching_loss(cv, ce, es.numpy(), et.numpy(), matching.qap, lam=1.0, noise_temp=0.1,
                                      rng=np.random.default_rng(0))
        assert float(loss) > 0, "the untrained model should not match perfectly"
        loss.backward()
        grad = sum(float(p.grad.abs().sum()) for p in m.backbone.parameters() if p.grad is not None)
        assert grad > 0, f"no encoder gradient through the {path} affinities"


def test_simclr_same_harness():
    built = simclr.build(_ctx(base={"sources": ["breastmnist"], "collection_size": 28}))
    out = built.method(_batch(built.dataset, 8))
    out["loss"].backward()
    assert float(out["loss"]) > 0 and 0 <= float(out["match_acc"]) <= 1
    assert built.metadata["pretrain_data"]["n_balanced"] == 546


def test_bad_options_raise_config_error():
    with pytest.raises(ConfigError, match="lvmmed"):
        lvmmed.build(_ctx(graph_sizee=16))
    with pytest.raises(ConfigError, match="alpha"):
        lvmmed.build(_ctx(alpha=1.5))
