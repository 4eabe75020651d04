"""Diffusion re-ranking: the graph and the re-ranked scores of a hand example, the conjugate gradient against a
dense solve, and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from jsbir import metrics

# Two pairs of unit vectors: 0 and 1 (cosine 0.8), 2 and 3 (cosine 0.8); across pairs 0, 0.6 or -0.6.
PAIRS = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]], np.float32)


def _dense(graph: metrics.Graph) -> np.ndarray:
    w = np.zeros((len(graph), len(graph)))
    np.put_along_axis(w, graph.neighbours, graph.weights, 1)
    return w


def test_graph_and_scores_of_a_hand_example():
    graph = metrics.knn_graph(PAIRS, k=1)
    # Each item's nearest neighbour is its pair and the choice is mutual: a = 0.8 ** 3 and each degree is a, so
    # every normalised weight is a / sqrt(a * a) = 1.
    np.testing.assert_array_equal(graph.neighbours[:, 0], [1, 0, 3, 2])
    np.testing.assert_allclose(_dense(graph), [[0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], atol=1e-6)
    # y = max(s, 0) ** 3 = (0.125, 0, 0, 0.008); with alpha 0.5 each pair's block [[1, -.5], [-.5, 1]] inverts to
    # [[1, .5], [.5, 1]] / 0.75.
    scores = np.array([[0.5, 0.0, -0.1, 0.2]], np.float32)
    out = metrics.diffuse(scores, graph, alpha=0.5)
    np.testing.assert_allclose(out, [[0.125 / 0.75, 0.0625 / 0.75, 0.004 / 0.75, 0.008 / 0.75]], rtol=1e-5)
    # The query is of item 0's class (items 0 and 1): item 1 rises from third place to second.
    relevant = np.array([[True, True, False, False]])
    assert metrics.mean_average_precision(scores, relevant) == pytest.approx((1 + 2 / 3) / 2)
    assert metrics.mean_average_precision(out, relevant) == 1.0
    # alpha 0 keeps y, whose order is the scores' wherever they are positive.
    np.testing.assert_allclose(metrics.diffuse(scores, graph, alpha=0.0), [[0.125, 0, 0, 0.008]], atol=1e-7)


def test_only_mutual_neighbours_are_linked():
    # 2's nearest is 1, but 1's nearest is 0: the pair (1, 2) is not mutual and carries no weight.
    f = np.array([[1.0, 0.0], [0.95, 0.312], [0.6, 0.8]], np.float32)
    w = _dense(metrics.knn_graph(f, k=1))
    assert w[0, 1] == pytest.approx(1.0) and w[1, 0] == pytest.approx(1.0)
    assert w[2].sum() == 0 and w[:, 2].sum() == 0


def test_conjugate_gradient_solves_the_system():
    rng = np.random.default_rng(0)
    f = rng.normal(size=(60, 8)).astype(np.float32) + np.repeat(rng.normal(size=(6, 8)) * 2, 10, axis=0)
    graph = metrics.knn_graph(f, k=7)
    w = _dense(graph)
    np.testing.assert_allclose(w, w.T, atol=1e-7)
    assert np.abs(np.linalg.eigvalsh(w)).max() <= 1 + 1e-5  # so I - alpha W is positive definite
    scores = rng.uniform(-1, 1, size=(9, 60)).astype(np.float32)
    expected = np.linalg.solve(np.eye(60) - 0.9 * w, np.maximum(scores, 0).T ** 3).T
    np.testing.assert_allclose(metrics.diffuse(scores, graph, alpha=0.9), expected, rtol=1e-4, atol=1e-6)


def test_small_galleries_and_errors():
    single = metrics.knn_graph(np.ones((1, 3)), k=5)
    np.testing.assert_allclose(metrics.diffuse(np.array([[0.5]]), single, alpha=0.9), [[0.125]])
    assert metrics.knn_graph(PAIRS, k=10).neighbours.shape == (4, 3)  # k clamped to the other items
    with pytest.raises(ValueError, match="k >= 1"):
        metrics.knn_graph(PAIRS, k=0)
    with pytest.raises(ValueError, match="finite"):
        metrics.knn_graph(np.full((3, 2), np.nan), k=1)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\)"):
        metrics.diffuse(np.zeros((1, 4)), metrics.knn_graph(PAIRS, k=1), alpha=1.0)
    with pytest.raises(ValueError, match="against a graph of 4 gallery items"):
        metrics.diffuse(np.zeros((1, 5)), metrics.knn_graph(PAIRS, k=1))
