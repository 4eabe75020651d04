"""Graph convolution (Kipf and Welling) over a padded jraph `GraphsTuple`, and a stacked Flax `GCN`.

The class graph is turned once into a `GraphsTuple` with static padded shapes (`padded_graph`),
following the `jraph.pad_with_graphs` convention: the real graph first, then one padding graph that
owns every padding node and padding edge. Padding edges join padding nodes only, so padding can
never reach a real node; the output rows of padding nodes are masked to zero anyway, so downstream
code may sum or normalise over all rows safely.

One layer computes `D^-1/2 (A + I) D^-1/2 X W + b`: the self loops are added by the convolution,
never stored in the edge list, and the bias is added after aggregation (as in Kipf and Welling) so
it is not rescaled by degrees.
"""

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import jraph
import numpy as np


def gcn_normalise(adjacency: np.ndarray) -> np.ndarray:
    """Dense renormalised adjacency `D^-1/2 (A + I) D^-1/2` in numpy, D the degree of A + I.

    A reference for tests and for code that wants the dense matrix; the layers below never form it.

    Args:
      adjacency: (C, C) symmetric adjacency (bool or 0/1); its diagonal is ignored.

    Returns:
      (C, C) float64 normalised adjacency.
    """
    a = np.asarray(adjacency, dtype=np.float64).copy()
    np.fill_diagonal(a, 1.0)
    inv_sqrt_degree = 1.0 / np.sqrt(a.sum(axis=1))
    return inv_sqrt_degree[:, None] * a * inv_sqrt_degree[None, :]


def padded_graph(
    adjacency: np.ndarray,
    node_features: np.ndarray,
    pad_nodes_to: int | None = None,
    pad_edges_to: int | None = None,
) -> jraph.GraphsTuple:
    """Builds a padded `GraphsTuple` holding one real graph and one padding graph.

    Args:
      adjacency: (C, C) bool symmetric adjacency. The diagonal is dropped: the convolution adds
        self loops.
      node_features: (C, F) node features (class word vectors).
      pad_nodes_to: total node count after padding, at least C + 1 (the padding graph needs one
        node); default C + 1.
      pad_edges_to: total directed-edge count after padding, at least the number of real directed
        edges (each undirected edge is stored in both directions); default exactly that number.

    Returns:
      A `GraphsTuple` of numpy arrays: nodes (pad_nodes_to, F) float32, senders/receivers
      (pad_edges_to,) int32, n_node and n_edge of length 2, edges and globals None.

    Raises:
      ValueError: if the adjacency is not square and symmetric, does not match the features, or the
        padding sizes are too small.
    """
    adjacency = np.asarray(adjacency, dtype=bool)
    node_features = np.asarray(node_features, dtype=np.float32)
    num = adjacency.shape[0]
    if adjacency.shape != (num, num) or not np.array_equal(adjacency, adjacency.T):
        raise ValueError(f"adjacency must be square and symmetric, got shape {adjacency.shape}.")
    if node_features.ndim != 2 or node_features.shape[0] != num:
        raise ValueError(f"node_features must be ({num}, F), got {node_features.shape}.")
    off_diagonal = adjacency & ~np.eye(num, dtype=bool)
    receivers, senders = np.nonzero(off_diagonal)  # row-major order: deterministic edge order.
    num_edges = senders.shape[0]
    pad_nodes_to = num + 1 if pad_nodes_to is None else pad_nodes_to
    pad_edges_to = num_edges if pad_edges_to is None else pad_edges_to
    if pad_nodes_to < num + 1:
        raise ValueError(f"pad_nodes_to={pad_nodes_to} must be at least num_nodes + 1 = {num + 1}.")
    if pad_edges_to < num_edges:
        raise ValueError(f"pad_edges_to={pad_edges_to} < {num_edges} real directed edges.")
    graph = jraph.GraphsTuple(
        nodes=node_features,
        edges=None,
        senders=senders.astype(np.int32),
        receivers=receivers.astype(np.int32),
        n_node=np.array([num], dtype=np.int32),
        n_edge=np.array([num_edges], dtype=np.int32),
        globals=None,
    )
    padded = jraph.pad_with_graphs(graph, n_node=pad_nodes_to, n_edge=pad_edges_to, n_graph=2)
    # jraph's batching widens the index arrays to int64 on the host; keep them int32 like JAX would.
    senders, receivers = padded.senders.astype(np.int32), padded.receivers.astype(np.int32)
    return padded._replace(senders=senders, receivers=receivers)


def real_nodes(graph_output: jax.Array, num_real: int) -> jax.Array:
    """The rows of a `GCN` output that belong to real nodes (they come first in a padded graph).

    Args:
      graph_output: (padded_nodes, F) node array.
      num_real: number of real nodes C (a Python int, so the slice is static).

    Returns:
      (C, F) array.
    """
    return graph_output[:num_real]


def node_mask(graph: jraph.GraphsTuple) -> jax.Array:
    """Which nodes of a padded graph are real (they come before the padding graph's nodes).

    A host (numpy) graph gives a constant mask, so it stays static when the graph is a module
    constant inside jit; a traced graph falls back to `jraph.get_node_padding_mask`.

    Args:
      graph: padded `GraphsTuple` from `padded_graph`.

    Returns:
      (N,) bool, True on real nodes.
    """
    if isinstance(graph.n_node, np.ndarray):
        total = graph.nodes.shape[0]
        return jnp.asarray(np.arange(total) < total - int(graph.n_node[-1]))
    return jraph.get_node_padding_mask(graph)


class GraphConv(nn.Module):
    """One graph convolution `D^-1/2 (A + I) D^-1/2 X W + b` with padding rows masked to zero.

    Attributes:
      features: output width.
      use_bias: add a bias after aggregation.
      kernel_init: initialiser for W.
    """

    features: int
    use_bias: bool = True
    kernel_init: Callable = nn.initializers.glorot_uniform()

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple) -> jax.Array:
        """Applies the convolution.

        Args:
          graph: padded `GraphsTuple` (see `padded_graph`) whose nodes are (N, F_in).

        Returns:
          (N, features) node array, zero on padding rows.
        """
        dense = nn.Dense(self.features, use_bias=False, kernel_init=self.kernel_init)
        conv = jraph.GraphConvolution(dense, add_self_edges=True, symmetric_normalization=True)
        nodes = conv(graph).nodes
        if self.use_bias:
            nodes = nodes + self.param("bias", nn.initializers.zeros, (self.features,))
        mask = node_mask(graph)
        return jnp.where(mask[:, None], nodes, 0.0)


class GCN(nn.Module):
    """Stacked graph convolutions: class vectors -> class prototypes.

    Dropout (when `dropout_rate > 0`) is applied to every layer's input, as in Kipf and Welling; the
    activation sits between layers and not after the last, so the output is a free linear embedding.

    Attributes:
      features: output width of each layer, e.g. (256, 128).
      activation: nonlinearity between layers.
      dropout_rate: dropout on each layer's input.
      use_bias: bias in each layer.
    """

    features: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    dropout_rate: float = 0.0
    use_bias: bool = True

    @nn.compact
    def __call__(self, graph: jraph.GraphsTuple, deterministic: bool = True) -> jax.Array:
        """Runs the stack.

        Args:
          graph: padded `GraphsTuple` from `padded_graph`.
          deterministic: disables dropout; when False a "dropout" RNG must be given to `apply`.

        Returns:
          (padded_nodes, features[-1]) node array with zero padding rows; `real_nodes` slices the
          real ones.
        """
        mask = node_mask(graph)[:, None]
        nodes = jnp.asarray(graph.nodes, jnp.float32)
        for i, width in enumerate(self.features):
            if self.dropout_rate > 0.0:
                nodes = nn.Dropout(self.dropout_rate)(nodes, deterministic=deterministic)
            layer = GraphConv(width, use_bias=self.use_bias, name=f"conv_{i}")
            nodes = layer(graph._replace(nodes=nodes))
            if i < len(self.features) - 1:
                # Re-mask: an activation with f(0) != 0 would otherwise leak into padding rows.
                nodes = jnp.where(mask, self.activation(nodes), 0.0)
        return nodes
