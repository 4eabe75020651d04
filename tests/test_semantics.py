"""Class graphs on hand-built points whose nearest neighbours and spanning trees are known."""

import numpy as np
import pytest

from jsbir.data.semantics import class_graph, knn_graph, mst_graph, semantic_distances


def _edges(adjacency):
    assert adjacency.dtype == bool
    assert np.array_equal(adjacency, adjacency.T) and not adjacency.diagonal().any()
    return {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(adjacency)), strict=True)}


def test_semantic_distances_hand_values():
    v = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    cos = semantic_distances(v)  # cosines 0, 3/5, 8/10
    assert cos.dtype == np.float32
    np.testing.assert_allclose(cos, [[0, 1, 0.4], [1, 0, 0.2], [0.4, 0.2, 0]], atol=1e-7)
    euc = semantic_distances(v, "euclidean")
    s5, s20, s13 = np.sqrt([5.0, 20.0, 13.0])
    np.testing.assert_allclose(euc, [[0, s5, s20], [s5, 0, s13], [s20, s13, 0]], rtol=1e-6)
    with pytest.raises(ValueError, match="hamming"):
        semantic_distances(v, "hamming")


def test_knn_on_a_line():
    line = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # k=1: 0->1, 1->0, 2->1, 3->2, 4->3: the chain.
    assert _edges(knn_graph(line, 1, "euclidean")) == {(0, 1), (1, 2), (2, 3), (3, 4)}
    # k=2: 0->{1,2}, 1->{0,2}, 2->{1,0} (0 and 3 tie at 3: smaller index), 3->{2,4}, 4->{3,2}.
    expected = {(0, 1), (0, 2), (1, 2), (2, 3), (3, 4), (2, 4)}
    assert _edges(knn_graph(line, 2, "euclidean")) == expected


def test_knn_tie_break_by_index():
    # Node 0 is equidistant from 1 and 2, whose own nearest neighbours are 3 and 4: only 0-1 stays.
    pts = np.array([[0.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [1.5, 0.0], [-1.5, 0.0]])
    assert _edges(knn_graph(pts, 1, "euclidean")) == {(0, 1), (1, 3), (2, 4)}


def test_knn_cosine_ignores_scale():
    angles = np.deg2rad([0.0, 10.0, 90.0, 100.0])
    scales = np.array([1.0, 3.0, 0.5, 2.0])[:, None]
    vectors = scales * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    assert _edges(knn_graph(vectors, 1)) == {(0, 1), (2, 3)}
    # k beyond C - 1 is clamped: the complete graph.
    assert _edges(knn_graph(vectors, 10)) == {(i, j) for i in range(4) for j in range(i + 1, 4)}
    with pytest.raises(ValueError, match="k must be"):
        knn_graph(vectors, 0)


def test_mst_on_shuffled_line_is_the_chain():
    x = np.array([[6.0], [0.0], [10.0], [1.0], [3.0]])  # sorted order: 1, 3, 4, 0, 2
    assert _edges(mst_graph(x)) == {(1, 3), (3, 4), (0, 4), (0, 2)}


def test_mst_ties_and_full_distance():
    square = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    # Prim from 0: 1 (ties with 3, smaller index), then 2 via 1, then 3 keeps its first parent 0.
    assert _edges(mst_graph(square)) == {(0, 1), (1, 2), (0, 3)}
    # On the first coordinate alone the tree would be 0-1, 1-2; on both coordinates it is 0-2, 0-1.
    pts = np.array([[0.0, 0.0], [0.1, 10.0], [1.0, 0.0]])
    assert _edges(mst_graph(pts)) == {(0, 1), (0, 2)}
    assert _edges(mst_graph(pts[:1])) == set()


def test_class_graph_dispatch():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(7, 4))
    np.testing.assert_array_equal(class_graph(v, "knn", k=2), knn_graph(v, 2))
    np.testing.assert_array_equal(class_graph(v, "mst"), mst_graph(v))
    np.testing.assert_array_equal(class_graph(v, "mst", metric="cosine"), mst_graph(v, "cosine"))
    assert len(_edges(class_graph(v, "mst"))) == 6
    with pytest.raises(ValueError, match=r"'star'.*knn.*mst"):
        class_graph(v, "star")
