"""Class semantics: distances between class side-information vectors, and class graphs from them.

Plain numpy, no framework: the graphs are built once on the host and handed to
`jsbir.models.gcn.padded_graph`. Graphs here carry no self loops; the graph convolution adds them
(D^-1/2 (A + I) D^-1/2).

Every builder is deterministic: ties between equal distances are broken by the smaller class index,
so the same vectors always give the same graph whatever the sort implementation.
"""

from collections.abc import Callable

import numpy as np

# Below this squared norm a vector counts as zero, so cosine distance stays finite for zero rows.
_EPS = 1e-12


def _cosine(vectors: np.ndarray) -> np.ndarray:
    norms = np.sqrt(np.maximum(np.sum(vectors * vectors, axis=1, keepdims=True), _EPS))
    unit = vectors / norms
    return 1.0 - unit @ unit.T


def _sqeuclidean(vectors: np.ndarray) -> np.ndarray:
    # Differences rather than the |a|^2 + |b|^2 - 2ab expansion: class counts are small, and the
    # exact form keeps equal points at distance exactly 0, which matters for tie-breaking.
    diff = vectors[:, None, :] - vectors[None, :, :]
    return np.sum(diff * diff, axis=-1)


def _euclidean(vectors: np.ndarray) -> np.ndarray:
    return np.sqrt(_sqeuclidean(vectors))


_METRICS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "cosine": _cosine,
    "euclidean": _euclidean,
    "sqeuclidean": _sqeuclidean,
}


def _distances(vectors: np.ndarray, metric: str) -> np.ndarray:
    """Float64 (C, C) distances with an exact zero diagonal."""
    if metric not in _METRICS:
        raise ValueError(f"Unknown metric {metric!r}; choose one of {sorted(_METRICS)}.")
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2:
        raise ValueError(f"Expected (num_classes, dim) vectors, got shape {vectors.shape}.")
    dist = _METRICS[metric](vectors)
    np.fill_diagonal(dist, 0.0)
    return dist


def semantic_distances(vectors: np.ndarray, metric: str = "cosine") -> np.ndarray:
    """Pairwise distances between class vectors.

    Args:
      vectors: (C, F) class side-information vectors (word vectors, attributes).
      metric: "cosine" (1 - cosine similarity), "euclidean" or "sqeuclidean".

    Returns:
      (C, C) float32 symmetric distances, zero on the diagonal.
    """
    return _distances(vectors, metric).astype(np.float32)


def knn_graph(vectors: np.ndarray, k: int, metric: str = "cosine") -> np.ndarray:
    """Symmetric k-nearest-neighbour class graph.

    i ~ j when j is among the k nearest classes of i, or i among those of j, so some nodes end up
    with more than k neighbours. Ties between equal distances go to the smaller class index (stable
    sort).

    Args:
      vectors: (C, F) class vectors.
      k: neighbours per class, at least 1; values above C - 1 are clamped to C - 1 (a complete
        graph), so tiny synthetic class sets work with the default k.
      metric: distance used to rank neighbours, see `semantic_distances`.

    Returns:
      (C, C) bool adjacency, symmetric, with a False diagonal (no self loops).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}.")
    dist = _distances(vectors, metric)
    num = dist.shape[0]
    k = min(k, num - 1)
    adjacency = np.zeros((num, num), dtype=bool)
    if k == 0:
        return adjacency
    # A node is never its own neighbour: push the diagonal past every real distance.
    np.fill_diagonal(dist, np.inf)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    adjacency[np.arange(num)[:, None], order] = True
    return adjacency | adjacency.T


def mst_graph(vectors: np.ndarray, metric: str = "euclidean") -> np.ndarray:
    """Minimum spanning tree (Prim's algorithm) over the full pairwise class distances.

    The tree is grown from class 0; each step adds the outside class with the smallest connecting
    distance, ties going to the smaller class index, and a class keeps its earlier parent on equal
    distances, so the result is deterministic. Unlike the released ZSCMR code, whose loop bug built
    the tree from a single word-vector dimension, this uses the distance over all dimensions.

    Args:
      vectors: (C, F) class vectors.
      metric: distance used for the edge weights, see `semantic_distances`.

    Returns:
      (C, C) bool adjacency with C - 1 undirected edges, symmetric, with a False diagonal.
    """
    dist = _distances(vectors, metric)
    num = dist.shape[0]
    adjacency = np.zeros((num, num), dtype=bool)
    if num < 2:
        return adjacency
    in_tree = np.zeros(num, dtype=bool)
    in_tree[0] = True
    best = dist[0].copy()
    parent = np.zeros(num, dtype=np.int64)
    for _ in range(num - 1):
        candidates = np.where(in_tree, np.inf, best)
        # argmin returns the first minimum, so the smallest index wins ties.
        node = int(np.argmin(candidates))
        adjacency[node, parent[node]] = adjacency[parent[node], node] = True
        in_tree[node] = True
        # Strict <: on equal distances a class keeps its earlier parent.
        closer = (~in_tree) & (dist[node] < best)
        best[closer] = dist[node][closer]
        parent[closer] = node
    return adjacency


_GRAPHS: dict[str, Callable[..., np.ndarray]] = {
    "knn": lambda vectors, k, metric: knn_graph(vectors, k, metric=metric or "cosine"),
    "mst": lambda vectors, k, metric: mst_graph(vectors, metric=metric or "euclidean"),
}


def class_graph(
    vectors: np.ndarray,
    kind: str = "knn",
    k: int = 5,
    metric: str | None = None,
) -> np.ndarray:
    """Builds a class graph by name.

    Args:
      vectors: (C, F) class vectors.
      kind: "knn" (symmetric k-nearest neighbours, cosine by default) or "mst" (minimum spanning
        tree, Euclidean by default).
      k: neighbours per class for "knn"; ignored by "mst".
      metric: overrides the builder's default metric when given.

    Returns:
      (C, C) bool symmetric adjacency without self loops.

    Raises:
      ValueError: for an unknown `kind`.
    """
    if kind not in _GRAPHS:
        raise ValueError(f"Unknown class graph kind {kind!r}; choose one of {sorted(_GRAPHS)}.")
    return _GRAPHS[kind](vectors, k, metric)
