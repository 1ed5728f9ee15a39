"""LVM-Med's graph toolkit (METHODS.md §4.1): kNN graph, 2-layer GCN, vertex and edge affinities.

One graph per view of a sub-batch of N images (one node per image). Choices where the paper is
silent (METHODS.md §4.7), each a parameter:

- kNN on the projected embeddings ``z`` *before* message passing (the paper's pseudo-code), cosine
  similarity, no self loops, symmetrised (``A = max(A, Aᵀ)``) so the GCN normalisation is the
  usual symmetric one; ``directed=True`` keeps the k out-edges only.
- GCN: ``H_l = σ(D̃^{-1/2}(A+I)D̃^{-1/2} H_{l-1} W_l)`` with ReLU between layers and none after the
  last, so node embeddings can take both signs (their cosines feed the affinities).
- Local similarity (VICRegL-style): positions of a feature map are mapped to image coordinates
  through the crop box of their view; the *location* term pairs each position of ``y^s_i`` with
  the spatially nearest position of ``y^t_a``, the *feature* term with its L2-nearest feature; the
  ``gamma`` best pairs (smallest distance) are kept and their cosines averaged;
  ``c^lo = 0.5·(location + feature)``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def knn_adjacency(z: torch.Tensor, k: int, *, directed: bool = False) -> torch.Tensor:
    """0/1 adjacency (N, N) linking each node to its ``k`` most cosine-similar others."""
    n = z.shape[0]
    k = min(k, n - 1)
    if k < 1:
        return torch.zeros(n, n, device=z.device)
    zn = F.normalize(z.detach(), dim=-1)
    sim = zn @ zn.T
    sim.fill_diagonal_(-float("inf"))
    idx = sim.topk(k, dim=1).indices
    a = torch.zeros(n, n, device=z.device)
    a.scatter_(1, idx, 1.0)
    return a if directed else torch.maximum(a, a.T)


def edge_list(a: torch.Tensor) -> torch.Tensor:
    """(E, 2) long tensor of the (i, j) pairs with ``a[i, j] != 0``."""
    return a.nonzero(as_tuple=False)


def normalized_adjacency(a: torch.Tensor) -> torch.Tensor:
    """D̃^{-1/2}(A+I)D̃^{-1/2} of a (possibly directed) 0/1 adjacency."""
    a_hat = a + torch.eye(a.shape[0], device=a.device, dtype=a.dtype)
    d = a_hat.sum(1).rsqrt()
    return d[:, None] * a_hat * d[None, :]


class GCN(nn.Module):
    """``num_layers`` graph-convolution layers of width ``dim`` (2 in the paper).

    ``residual=True`` returns ``h + GCN(h)``. The paper's formula has no skip; without it, on a
    16-node kNN graph (k=5, symmetrised: ~7 neighbours) two propagations average each node over
    most of the graph and all node embeddings collapse to nearly one vector (measured with fixed
    input features and a learned projector: the diagonal-vs-mean gap of the vertex cosines falls
    to ~0.003 and the matching loss rises while training, where the same run without the GCN,
    or with the skip, learns). The skip keeps each node's identity.
    """

    def __init__(self, dim: int, hidden_dim: int | None = None, num_layers: int = 2, residual: bool = True):
        super().__init__()
        hidden_dim = hidden_dim or dim
        dims = [dim] + [hidden_dim] * (num_layers - 1) + [dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims[:-1], dims[1:]))
        self.residual = residual

    def forward(self, h: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        norm_a = normalized_adjacency(a)
        x = h
        for n, layer in enumerate(self.layers):
            x = norm_a @ layer(x)
            if n < len(self.layers) - 1:
                x = F.relu(x)
        return h + x if self.residual else x


def grid_coordinates(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Image coordinates (B, h*w, 2) of the centres of an h×w feature grid inside each crop box.

    ``boxes`` (B, 4) = (y0, x0, y1, x1) in [0, 1] of the source image; a horizontally flipped view
    has x0 > x1, so the mapping stays right.
    """
    gy = (torch.arange(h, device=boxes.device, dtype=boxes.dtype) + 0.5) / h
    gx = (torch.arange(w, device=boxes.device, dtype=boxes.dtype) + 0.5) / w
    u = torch.stack(torch.meshgrid(gy, gx, indexing="ij"), -1).reshape(-1, 2)          # (P, 2)
    y0, x0, y1, x1 = boxes.unbind(-1)
    ys = y0[:, None] + (y1 - y0)[:, None] * u[None, :, 0]
    xs = x0[:, None] + (x1 - x0)[:, None] * u[None, :, 1]
    return torch.stack([ys, xs], -1)


def _directional_local(fs: torch.Tensor, ft: torch.Tensor, cs: torch.Tensor, ct: torch.Tensor,
                       gamma: int) -> torch.Tensor:
    """c^lo(i, a) for all pairs: (N, N). fs/ft (N, P, C) features, cs/ct (N, P, 2) coordinates."""
    fs_n, ft_n = F.normalize(fs, dim=-1), F.normalize(ft, dim=-1)
    cos = torch.einsum("ipc,aqc->iapq", fs_n, ft_n)                                   # (N, N, P, Q)
    gamma = min(gamma, fs.shape[1])

    def top_mean(dist: torch.Tensor) -> torch.Tensor:
        d_best, q = dist.min(-1)                                                      # (N, N, P)
        c = cos.gather(-1, q.unsqueeze(-1)).squeeze(-1)
        keep = d_best.topk(gamma, dim=-1, largest=False).indices
        return c.gather(-1, keep).mean(-1)

    loc_dist = torch.cdist(cs.unsqueeze(1).expand(-1, ct.shape[0], -1, -1).flatten(0, 1),
                           ct.unsqueeze(0).expand(cs.shape[0], -1, -1, -1).flatten(0, 1))
    loc_dist = loc_dist.view(cos.shape)
    with torch.no_grad():  # selection only; gradients flow through the kept cosines
        feat_dist = (fs.pow(2).sum(-1)[:, None, :, None] + ft.pow(2).sum(-1)[None, :, None, :]
                     - 2 * torch.einsum("ipc,aqc->iapq", fs, ft))
    return 0.5 * (top_mean(loc_dist) + top_mean(feat_dist))


def local_affinity(fs: torch.Tensor, ft: torch.Tensor, boxes_s: torch.Tensor, boxes_t: torch.Tensor,
                   grid: tuple[int, int], gamma: int) -> torch.Tensor:
    """``c^lo(i, a) + c^lo(a, i)`` (N, N) from feature maps flattened to (N, P, C)."""
    cs = grid_coordinates(boxes_s, *grid)
    ct = grid_coordinates(boxes_t, *grid)
    forward = _directional_local(fs, ft, cs, ct, gamma)
    backward = _directional_local(ft, fs, ct, cs, gamma).T
    return forward + backward


def vertex_affinity(zs: torch.Tensor, zt: torch.Tensor, local: torch.Tensor | None,
                    alpha: float = 0.8) -> torch.Tensor:
    """``c^v = α·cos(ẑ^s_i, ẑ^t_a) + (1-α)·local`` (N, N); ``local=None`` means α = 1."""
    glob = F.normalize(zs, dim=-1) @ F.normalize(zt, dim=-1).T
    if local is None:
        return glob
    return alpha * glob + (1 - alpha) * local


def edge_affinity(zs: torch.Tensor, zt: torch.Tensor, edges_s: torch.Tensor,
                  edges_t: torch.Tensor) -> torch.Tensor:
    """``c^e_{(ij),(ab)} = cos(ẑ^s_i - ẑ^s_j, ẑ^t_a - ẑ^t_b)``: (|E^s|, |E^t|)."""
    ds = zs[edges_s[:, 0]] - zs[edges_s[:, 1]]
    dt = zt[edges_t[:, 0]] - zt[edges_t[:, 1]]
    return F.normalize(ds, dim=-1) @ F.normalize(dt, dim=-1).T
