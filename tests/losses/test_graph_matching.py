"""QAP / LAP solvers against brute force, and the Hamming graph-matching loss against a loop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medvlp.losses.graph_matching import graph_matching_loss, hamming_loss
from medvlp.models.matching import affinity_matrix, brute_force_qap, lap, qap, qap_score


def _random_instance(rng, n, p_edge=0.5):
    cv = rng.uniform(-1, 1, (n, n))

    def edges():
        e = [(i, j) for i in range(n) for j in range(n) if i != j and rng.random() < p_edge]
        return np.array(e, dtype=np.int64).reshape(-1, 2)

    es, et = edges(), edges()
    return cv, rng.uniform(-1, 1, (len(es), len(et))), es, et


def _loop_score(v, cv, ce, es, et):
    s = sum(cv[i, a] * v[i, a] for i in range(len(cv)) for a in range(len(cv)))
    for p, (i, j) in enumerate(es):
        for q, (a, b) in enumerate(et):
            s += ce[p, q] * v[i, a] * v[j, b]
    return s


def test_affinity_matrix_reproduces_the_qap_objective():
    rng = np.random.default_rng(0)
    cv, ce, es, et = _random_instance(rng, 5)
    k = affinity_matrix(cv, ce, es, et)
    assert np.allclose(k, k.T)
    for _ in range(5):
        v = np.eye(5)[rng.permutation(5)]
        assert qap_score(v, k) == pytest.approx(_loop_score(v, cv, ce, es, et))


def test_qap_returns_the_brute_force_optimum_on_small_instances():
    # 60 random instances, N = 3..6, kNN-like edge density and cosine-range affinities: the
    # multi-start IPFP/RRWM + local search must hit the exact optimum on every one.
    rng = np.random.default_rng(0)
    for _ in range(60):
        n = int(rng.integers(3, 7))
        cv, ce, es, et = _random_instance(rng, n)
        k = affinity_matrix(cv, ce, es, et)
        v, v_opt = qap(cv, ce, es, et), brute_force_qap(cv, ce, es, et)
        assert sorted(v.sum(0)) == [1.0] * n and sorted(v.sum(1)) == [1.0] * n
        assert qap_score(v, k) == pytest.approx(qap_score(v_opt, k), abs=1e-9)


def test_lap_is_the_brute_force_first_order_optimum():
    rng = np.random.default_rng(1)
    for _ in range(20):
        cv = rng.normal(size=(5, 5))
        assert np.array_equal(lap(cv), brute_force_qap(cv))


def test_qap_without_edges_equals_lap_and_second_order_can_change_the_answer():
    rng = np.random.default_rng(2)
    cv = rng.normal(size=(6, 6))
    assert np.array_equal(qap(cv), lap(cv))
    # A strong edge term that rewards the reversed matching overrides weak vertex preferences.
    cv = np.eye(4) * 0.1
    es = np.array([(i, i + 1) for i in range(3)])
    et = np.array([(3 - i, 2 - i) for i in range(3)])
    ce = np.eye(3) * 5.0
    v = qap(cv, ce, es, et)
    assert np.array_equal(v.argmax(1), [3, 2, 1, 0])


def test_hamming_loss_matches_loop():
    rng = np.random.default_rng(3)
    v = np.eye(5)[rng.permutation(5)]
    ref = sum(v[i, a] * (i != a) + (i == a) * (1 - v[i, a]) for i in range(5) for a in range(5)) / 5
    assert float(hamming_loss(torch.tensor(v))) == pytest.approx(ref)
    assert float(hamming_loss(torch.eye(5))) == 0.0


def test_graph_matching_loss_is_zero_for_a_clear_identity_and_has_gradients():
    cv = (torch.eye(6) * 2 - 1).requires_grad_(True)
    es = np.array([(i, (i + 1) % 6) for i in range(6)])
    ce = torch.zeros(6, 6, requires_grad=True)
    loss, v = graph_matching_loss(cv, ce, es, es, lambda a, b, c, d: qap(a, b, c, d), noise_temp=0.0)
    assert float(loss.detach()) == 0.0 and torch.equal(v, torch.eye(6))
    # A wrong matching gives a positive loss and a gradient that raises the diagonal affinities.
    cv2 = torch.tensor(np.eye(6)[[1, 0, 3, 2, 5, 4]] * 2 - 1, dtype=torch.float32, requires_grad=True)
    loss, v = graph_matching_loss(cv2, None, None, None, lambda a, b, c, d: lap(a), noise_temp=0.0)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(2.0)
    assert (cv2.grad.diagonal() < 0).all() and (cv2.grad[v.bool()] > 0).all()
