"""Graph-matching solvers for LVM-Med: the second-order QAP and the first-order LAP (ablation).

Both *maximise* affinity over N x N permutation matrices ``v`` (METHODS.md §4.1, the paper writes
the same problem as ``argmin -Σ c^v v - Σ c^e v v``):

    score(v) = Σ_ia c^v_ia v_ia + Σ_{(i,j)∈E^s, (a,b)∈E^t} c^e_{(ij),(ab)} v_ia v_jb

The paper solves this Lawler QAP with Lagrange-decomposition dual ascent (Swoboda et al. 2017),
which has no maintained Python package; we use our own **IPFP** (Leordeanu et al. 2009) on the
Lawler affinity matrix ``K`` (N²×N², ``c^v`` on the diagonal, ``c^e`` off it), multi-started from
the LAP solution, from **RRWM** (Cho et al. 2010) and from the uniform matrix, each rounded with the
Hungarian method (``scipy.optimize.linear_sum_assignment``) and polished by a pairwise-swap local
search. On small graphs this finds the brute-force optimum (tests); on 16 nodes it is a heuristic,
like the paper's solver. Solvers are numpy-only and never see gradients (IMLE wraps them).
"""
from __future__ import annotations

from itertools import permutations

import numpy as np
from scipy.optimize import linear_sum_assignment


def lap(cv: np.ndarray) -> np.ndarray:
    """First-order matching: the permutation maximising ``Σ c^v_ia v_ia`` (Hungarian)."""
    cv = np.asarray(cv, dtype=np.float64)
    rows, cols = linear_sum_assignment(cv, maximize=True)
    v = np.zeros_like(cv)
    v[rows, cols] = 1.0
    return v


def affinity_matrix(cv: np.ndarray, ce: np.ndarray | None, edges_s: np.ndarray | None,
                    edges_t: np.ndarray | None) -> np.ndarray:
    """Symmetric Lawler matrix K (N²×N², index ``i*N + a``) with ``vec(v)ᵀ K vec(v) = score(v)``."""
    n = cv.shape[0]
    k = np.zeros((n * n, n * n))
    k[np.arange(n * n), np.arange(n * n)] = cv.reshape(-1)
    if ce is not None and len(edges_s) and len(edges_t):
        es, et = np.asarray(edges_s), np.asarray(edges_t)
        ia = es[:, 0, None] * n + et[None, :, 0]   # (Es, Et): index of v_ia
        jb = es[:, 1, None] * n + et[None, :, 1]   # index of v_jb
        # Half on each side keeps K symmetric; ia == jb only for self-loops, which kNN graphs lack.
        np.add.at(k, (ia.ravel(), jb.ravel()), 0.5 * ce.ravel())
        np.add.at(k, (jb.ravel(), ia.ravel()), 0.5 * ce.ravel())
    return k


def qap_score(v: np.ndarray, k: np.ndarray) -> float:
    x = v.reshape(-1)
    return float(x @ k @ x)


def _hungarian(x: np.ndarray, n: int) -> np.ndarray:
    return lap(x.reshape(n, n))


def rrwm(k: np.ndarray, n: int, *, alpha: float = 0.2, beta: float = 30.0, iters: int = 50) -> np.ndarray:
    """Reweighted random walks (Cho et al. 2010): a continuous, doubly-stochastic-ish N×N solution."""
    kk = k - k.min()  # random walks need non-negative affinities; a constant shift keeps the argmax
    d = kk.sum(1).max()
    if d <= 0:
        return np.full((n, n), 1.0 / n)
    p = kk / d
    x = np.full(n * n, 1.0 / n)
    for _ in range(iters):
        x_new = p @ x
        y = np.exp(beta * x_new.reshape(n, n) / max(x_new.max(), 1e-12))
        for _ in range(10):  # Sinkhorn to the assignment polytope
            y = y / y.sum(1, keepdims=True)
            y = y / y.sum(0, keepdims=True)
        y = y.reshape(-1)
        x_new = alpha * x_new + (1 - alpha) * y
        x_new = x_new / x_new.sum()
        if np.abs(x_new - x).sum() < 1e-8:
            x = x_new
            break
        x = x_new
    return x.reshape(n, n)


def ipfp(k: np.ndarray, x0: np.ndarray, *, iters: int = 50) -> np.ndarray:
    """Integer projected fixed point (Leordeanu et al. 2009) from a continuous start ``x0`` (N×N).

    Each step solves the linearised problem with the Hungarian method and line-searches between
    the current point and that permutation; returns the best permutation visited.
    """
    n = x0.shape[0]
    x = x0.reshape(-1).astype(np.float64)
    best, best_score = None, -np.inf
    for _ in range(iters):
        b = _hungarian(k @ x, n).reshape(-1)
        s = float(b @ k @ b)
        if s > best_score:
            best, best_score = b, s
        d = b - x
        c, dd = float(x @ k @ d), float(d @ k @ d)
        r = 1.0 if dd >= 0 else min(-c / dd, 1.0)
        x_new = x + r * d
        if np.abs(x_new - x).max() < 1e-9:
            break
        x = x_new
    return best.reshape(n, n)


def _moves(n: int, three_cycles: bool) -> list[tuple[int, ...]]:
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    if not three_cycles:
        return pairs
    return pairs + [c for i in range(n) for j in range(i + 1, n) for m in range(j + 1, n)
                    for c in ((i, j, m), (i, m, j))]


def swap_search(v: np.ndarray, k: np.ndarray, max_passes: int = 20,
                three_cycles: bool | None = None) -> np.ndarray:
    """Greedy local search: swap the targets of two rows (and rotate those of three rows, by
    default when N <= 10, where it is cheap) while that raises the score."""
    n = v.shape[0]
    perm = v.argmax(1)
    score = qap_score(v, k)
    moves = _moves(n, n <= 10 if three_cycles is None else three_cycles)
    base = np.arange(n) * n
    for _ in range(max_passes):
        improved = False
        for mv in moves:
            p = perm.copy()
            p[list(mv)] = perm[list(mv[1:] + mv[:1])]
            idx = base + p
            s = float(k[np.ix_(idx, idx)].sum())
            if s > score + 1e-12:
                perm, score, improved = p, s, True
        if not improved:
            break
    out = np.zeros_like(v)
    out[np.arange(n), perm] = 1.0
    return out


def qap(cv: np.ndarray, ce: np.ndarray | None = None, edges_s: np.ndarray | None = None,
        edges_t: np.ndarray | None = None, *, n_random_starts: int = 4, seed: int = 0) -> np.ndarray:
    """Second-order matching: a permutation (N×N 0/1) maximising ``score(v)``; see module doc."""
    cv = np.asarray(cv, dtype=np.float64)
    n = cv.shape[0]
    k = affinity_matrix(cv, None if ce is None else np.asarray(ce, dtype=np.float64), edges_s, edges_t)
    rng = np.random.default_rng(seed)
    starts = [lap(cv), rrwm(k, n), np.full((n, n), 1.0 / n)]
    # Random permutations as extra starts: the QAP landscape has deep local optima that the
    # deterministic starts share; a few random ones escape them at a small cost.
    starts += [np.eye(n)[rng.permutation(n)] for _ in range(n_random_starts)]
    best, best_score = None, -np.inf
    for x0 in starts:
        v = swap_search(ipfp(k, x0), k)
        s = qap_score(v, k)
        if s > best_score:
            best, best_score = v, s
    return best


def brute_force_qap(cv: np.ndarray, ce: np.ndarray | None = None, edges_s=None, edges_t=None) -> np.ndarray:
    """Exact optimum by enumerating all N! permutations (tests and tiny graphs only, N <= 8)."""
    n = cv.shape[0]
    if n > 8:
        raise ValueError(f"brute_force_qap: N={n} has {n}! permutations; use qap() for N > 8")
    k = affinity_matrix(np.asarray(cv, float), None if ce is None else np.asarray(ce, float), edges_s, edges_t)
    best, best_score = None, -np.inf
    for p in permutations(range(n)):
        idx = np.arange(n) * n + np.array(p)
        s = float(k[np.ix_(idx, idx)].sum())
        if s > best_score:
            best, best_score = p, s
    v = np.zeros((n, n))
    v[np.arange(n), best] = 1.0
    return v
