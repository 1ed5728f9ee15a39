"""Graph toolkit against direct loop/numpy references; gradients through both affinities."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medvlp.models.graph import (GCN, edge_affinity, edge_list, grid_coordinates, knn_adjacency, local_affinity,
                                 normalized_adjacency, vertex_affinity)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_knn_adjacency_matches_loop():
    z = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    a = knn_adjacency(z, 3, directed=True).numpy()
    zn = z.numpy()
    for i in range(10):
        sims = sorted(((_cos(zn[i], zn[j]), j) for j in range(10) if j != i), reverse=True)
        assert set(np.flatnonzero(a[i])) == {j for _, j in sims[:3]}
    sym = knn_adjacency(z, 3).numpy()
    assert np.array_equal(sym, np.maximum(a, a.T)) and np.trace(sym) == 0
    assert (sym.sum(1) >= 3).all()


def test_gcn_layer_is_the_normalised_propagation():
    a = torch.tensor([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=torch.float32)
    a_hat = a.numpy() + np.eye(3)
    d = np.diag(1 / np.sqrt(a_hat.sum(1)))
    assert np.allclose(normalized_adjacency(a).numpy(), d @ a_hat @ d)
    gcn = GCN(4, num_layers=2, residual=False)
    h = torch.randn(3, 4)
    w1, w2 = gcn.layers
    ref = d @ a_hat @ d
    x = np.maximum(ref @ (h.numpy() @ w1.weight.detach().numpy().T + w1.bias.detach().numpy()), 0)
    x = ref @ (x @ w2.weight.detach().numpy().T + w2.bias.detach().numpy())
    assert np.allclose(gcn(h, a).detach().numpy(), x, atol=1e-5)


def test_edge_and_vertex_affinity_match_loops():
    g = torch.Generator().manual_seed(1)
    zs, zt = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    es, et = torch.tensor([[0, 1], [2, 4], [3, 0]]), torch.tensor([[1, 2], [4, 3]])
    ce = edge_affinity(zs, zt, es, et).numpy()
    for p, (i, j) in enumerate(es.tolist()):
        for q, (a, b) in enumerate(et.tolist()):
            assert ce[p, q] == pytest.approx(_cos((zs[i] - zs[j]).numpy(), (zt[a] - zt[b]).numpy()), abs=1e-6)
    local = torch.randn(5, 5, generator=g)
    cv = vertex_affinity(zs, zt, local, 0.8).numpy()
    for i in range(5):
        for a in range(5):
            ref = 0.8 * _cos(zs[i].numpy(), zt[a].numpy()) + 0.2 * float(local[i, a])
            assert cv[i, a] == pytest.approx(ref, abs=1e-6)
    assert torch.equal(edge_list(torch.tensor([[0, 1], [1, 0.0]])), torch.tensor([[0, 1], [1, 0]]))


def test_grid_coordinates_follow_crop_and_flip():
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.5, 1.0, 1.0, 0.5]])   # 2nd: bottom-right, flipped
    c = grid_coordinates(boxes, 2, 2)
    assert torch.allclose(c[0], torch.tensor([[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]))
    assert torch.allclose(c[1], torch.tensor([[0.625, 0.875], [0.625, 0.625], [0.875, 0.875], [0.875, 0.625]]))


def _local_reference(fs, ft, cs, ct, gamma):
    """One direction of the local term for one pair, by loops."""
    out = {}
    for kind in ("loc", "feat"):
        pairs = []
        for p in range(len(fs)):
            if kind == "loc":
                d = [np.linalg.norm(cs[p] - ct[q]) for q in range(len(ft))]
            else:
                d = [np.linalg.norm(fs[p] - ft[q]) for q in range(len(ft))]
            q = int(np.argmin(d))
            pairs.append((d[q], _cos(fs[p], ft[q])))
        pairs.sort(key=lambda t: t[0])
        out[kind] = np.mean([c for _, c in pairs[:gamma]])
    return 0.5 * (out["loc"] + out["feat"])


def test_local_affinity_matches_loop_reference():
    g = torch.Generator().manual_seed(2)
    fs, ft = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    # Random boxes (one flipped): no ties in the nearest-location or top-gamma choices.
    bs = torch.tensor([[0.03, 0.01, 0.97, 0.93], [0.11, 0.23, 0.71, 0.88], [0.02, 0.83, 0.61, 0.12]])
    bt = torch.tensor([[0.21, 0.17, 0.92, 0.86], [0.04, 0.07, 0.52, 0.49], [0.33, 0.06, 0.98, 0.74]])
    got = local_affinity(fs, ft, bs, bt, (2, 2), gamma=3).numpy()
    cs, ct = grid_coordinates(bs, 2, 2).numpy(), grid_coordinates(bt, 2, 2).numpy()
    for i in range(3):
        for a in range(3):
            ref = (_local_reference(fs[i].numpy(), ft[a].numpy(), cs[i], ct[a], 3)
                   + _local_reference(ft[a].numpy(), fs[i].numpy(), ct[a], cs[i], 3))
            assert got[i, a] == pytest.approx(ref, abs=1e-5)


def test_local_affinity_prefers_the_same_image():
    # Two crops of the same feature "image" share features at matching locations.
    g = torch.Generator().manual_seed(3)
    base = torch.randn(4, 4, 4, 8, generator=g)          # 4 images, 4x4 map, 8 channels
    fs = base[:, :2, :2].reshape(4, 4, 8)                 # top-left quarter
    ft = base[:, :2, :2].reshape(4, 4, 8) + 0.1 * torch.randn(4, 4, 8, generator=g)
    box = torch.tensor([[0.0, 0.0, 0.5, 0.5]] * 4)
    aff = local_affinity(fs, ft, box, box, (2, 2), gamma=4)
    assert (aff.argmax(1) == torch.arange(4)).all()
    assert F.cosine_similarity(fs.flatten(1), ft.flatten(1)).min() > 0.9


def test_gcn_residual_adds_the_input():
    a = knn_adjacency(torch.randn(6, 4), 2)
    torch.manual_seed(0)
    plain = GCN(4, residual=False)
    torch.manual_seed(0)
    res = GCN(4, residual=True)
    h = torch.randn(6, 4)
    assert torch.allclose(res(h, a), plain(h, a) + h)
