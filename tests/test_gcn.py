"""Graph convolution against the dense formula D^-1/2 (A + I) D^-1/2 X W + b, with padding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jsbir.nn.gcn import GCN, GraphConv, gcn_normalise, padded_graph, real_nodes

# Five real nodes: edges 0-1, 1-2, 2-3, 0-2; node 4 isolated; a stray self loop on 3 to ignore.
EDGES = [(0, 1), (1, 2), (2, 3), (0, 2)]
NUM_REAL, PAD_NODES, PAD_EDGES = 5, 8, 12


def _adjacency():
    a = np.zeros((NUM_REAL, NUM_REAL), bool)
    for i, j in EDGES:
        a[i, j] = a[j, i] = True
    a[3, 3] = True
    return a


def _dense_normalised():
    # Written out independently of gcn_normalise: degrees of A + I are [3, 3, 4, 2, 1].
    a_hat = np.eye(NUM_REAL)
    for i, j in EDGES:
        a_hat[i, j] = a_hat[j, i] = 1.0
    d = 1.0 / np.sqrt(a_hat.sum(1))
    np.testing.assert_allclose(1.0 / d**2, [3, 3, 4, 2, 1])
    return d[:, None] * a_hat * d[None, :]


def _graph(features, pad_features=None):
    graph = padded_graph(_adjacency(), features, PAD_NODES, PAD_EDGES)
    if pad_features is not None:
        nodes = graph.nodes.copy()
        nodes[NUM_REAL:] = pad_features
        graph = graph._replace(nodes=nodes)
    return graph


def test_gcn_normalise_hand_values():
    path = np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], bool)  # degrees with self loops 2, 3, 2
    s6 = 1 / np.sqrt(6)
    expected = [[0.5, s6, 0.0], [s6, 1 / 3, s6], [0.0, s6, 0.5]]
    np.testing.assert_allclose(gcn_normalise(path), expected, rtol=1e-12)


def test_padded_graph_layout():
    graph = _graph(np.ones((NUM_REAL, 3)))
    np.testing.assert_array_equal(graph.n_node, [5, 3])
    np.testing.assert_array_equal(graph.n_edge, [8, 4])  # 4 undirected edges, both directions
    assert graph.senders.dtype == np.int32 and graph.nodes.shape == (8, 3)
    real = set(zip(graph.senders[:8].tolist(), graph.receivers[:8].tolist(), strict=True))
    assert real == {e for i, j in EDGES for e in ((i, j), (j, i))}  # no (3, 3) self loop
    # Padding edges join padding nodes only (jraph puts them on the first padding node).
    np.testing.assert_array_equal(graph.senders[8:], [5] * 4)
    np.testing.assert_array_equal(graph.receivers[8:], [5] * 4)
    default = padded_graph(_adjacency(), np.ones((NUM_REAL, 3)))
    np.testing.assert_array_equal(default.n_node, [5, 1])
    np.testing.assert_array_equal(default.n_edge, [8, 0])
    with pytest.raises(ValueError, match="pad_nodes_to"):
        padded_graph(_adjacency(), np.ones((NUM_REAL, 3)), pad_nodes_to=5)
    asymmetric = _adjacency()
    asymmetric[0, 4] = True
    with pytest.raises(ValueError, match="symmetric"):
        padded_graph(asymmetric, np.ones((NUM_REAL, 3)))


def test_graph_conv_equals_dense_formula_and_ignores_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(NUM_REAL, 3)).astype(np.float32)
    w = rng.normal(size=(3, 2)).astype(np.float32)
    b = np.array([0.5, -1.0], np.float32)
    params = {"params": {"Dense_0": {"kernel": w}, "bias": b}}
    apply = jax.jit(GraphConv(2).apply)
    out = np.asarray(apply(params, _graph(x)))
    expected = _dense_normalised() @ x @ w + b
    np.testing.assert_allclose(out[:NUM_REAL], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[NUM_REAL:], 0.0)
    noisy = np.asarray(apply(params, _graph(x, rng.normal(size=(3, 3)) * 100)))
    np.testing.assert_array_equal(noisy, out)


def test_two_layer_gcn_equals_dense_formula():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(NUM_REAL, 3)).astype(np.float32)
    model = GCN(features=(4, 2))
    params = jax.jit(model.init)(jax.random.key(0), _graph(x))
    # Non-zero biases so the bias placement (after aggregation) is checked too.
    params = jax.tree_util.tree_map(lambda p: np.asarray(p) + 0.3 * (p.ndim == 1), params)
    p = params["params"]
    a_hat = _dense_normalised()
    hidden = np.maximum(a_hat @ x @ p["conv_0"]["Dense_0"]["kernel"] + p["conv_0"]["bias"], 0.0)
    expected = a_hat @ hidden @ p["conv_1"]["Dense_0"]["kernel"] + p["conv_1"]["bias"]
    out = jax.jit(model.apply)(params, _graph(x, pad_features=rng.normal(size=(3, 3))))
    np.testing.assert_allclose(real_nodes(out, NUM_REAL), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out[NUM_REAL:], 0.0)
    # A host graph closed over as a constant (as a model field would be) takes the static-mask path.
    constant = jax.jit(lambda p: model.apply(p, _graph(x)))(params)
    np.testing.assert_allclose(constant, out, rtol=1e-6, atol=1e-7)


def test_dropout_keeps_padding_zero():
    x = np.ones((NUM_REAL, 3), np.float32)
    model = GCN(features=(4, 2), dropout_rate=0.5, activation=jax.nn.sigmoid)  # sigmoid(0) != 0
    params = jax.jit(model.init)(jax.random.key(0), _graph(x))
    apply = jax.jit(model.apply, static_argnames="deterministic")
    out = apply(params, _graph(x), deterministic=False, rngs={"dropout": jax.random.key(1)})
    np.testing.assert_array_equal(out[NUM_REAL:], 0.0)
    assert jnp.all(jnp.isfinite(out))
