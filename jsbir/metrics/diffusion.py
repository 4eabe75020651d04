"""Diffusion re-ranking over the gallery's nearest-neighbour graph (Iscen et al., CVPR 2017), in plain numpy.

A query's scores against the gallery spread along a graph that links each gallery item to its mutual nearest
neighbours, so that an item whose neighbours score well rises with them. The graph is built once per gallery, from
any features of its items (it needs no labels and never sees the queries)::

    a_ij = max(f_i . f_j, 0) ** power   when i and j are each among the other's k nearest neighbours, else 0
    W    = D^(-1/2) A D^(-1/2)            (D: the row sums of A)

and a query's re-ranked scores are ``x = (I - alpha W)^(-1) y`` with ``y = max(s, 0) ** power`` (``s``: its
scores), solved by conjugate gradient (``I - alpha W`` is symmetric positive definite for ``alpha < 1``). ``k`` near
the number of gallery items a class has, ``alpha`` 0.9 and ``power`` 3 are the usual settings.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jsbir.metrics.ranking import _row_chunks


@dataclasses.dataclass(frozen=True)
class Graph:
    """A gallery's normalised mutual k-nearest-neighbour graph.

    Attributes:
      neighbours: (N, k) int64 gallery indices, each row's k nearest neighbours (itself excluded).
      weights: (N, k) float32 ``W`` entries of those pairs (0 where the pair is not mutual); ``W`` is symmetric.
    """

    neighbours: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.neighbours)

    def apply(self, x: np.ndarray) -> np.ndarray:
        """``W @ x`` for (N, Q) ``x``."""
        return np.einsum("nk,nkq->nq", self.weights, x[self.neighbours])


def knn_graph(features: np.ndarray, k: int, power: float = 3.0) -> Graph:
    """The :class:`Graph` of (N, D) gallery ``features`` (compared by cosine similarity).

    Raises:
      ValueError: ``k`` < 1, or the features are not a finite (N, D) array.
    """
    if k < 1:
        raise ValueError(f"the diffusion graph needs k >= 1 neighbours, got {k}")
    f = np.asarray(features, np.float32)
    if f.ndim != 2 or not np.isfinite(f).all():
        raise ValueError(f"graph features must be a finite (N, D) array, got shape {f.shape}")
    f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    n = len(f)
    k = min(k, n - 1)
    if k < 1:  # one item: no edges
        return Graph(np.zeros((n, 0), np.int64), np.zeros((n, 0), np.float32))
    neighbours = np.empty((n, k), np.int64)
    similarity = np.empty((n, k), np.float32)
    for rows in _row_chunks(n, n):
        block = f[rows] @ f.T
        block[np.arange(block.shape[0]), np.arange(rows.start, rows.stop)] = -np.inf  # not its own neighbour
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        neighbours[rows] = top
        similarity[rows] = np.take_along_axis(block, top, 1)
    mutual = (neighbours[neighbours] == np.arange(n)[:, None, None]).any(-1)
    affinity = np.where(mutual, np.maximum(similarity, 0.0) ** power, 0.0)
    degree = affinity.sum(1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    weights = affinity * scale[:, None] * scale[neighbours]
    return Graph(neighbours, weights.astype(np.float32))


def diffuse(
    scores: np.ndarray,
    graph: Graph,
    alpha: float = 0.9,
    power: float = 3.0,
    tolerance: float = 1e-6,
    max_iterations: int = 200,
) -> np.ndarray:
    """(Q, N) float32 re-ranked scores: ``(I - alpha W)^(-1) max(scores, 0) ** power`` for every query row.

    Args:
      scores: (Q, N) query-gallery scores (higher is closer), the gallery in the graph's order.
      graph: the gallery's :func:`knn_graph`.
      alpha: how far scores spread, in [0, 1); 0 leaves the ranking as it was.
      power: the exponent on the (non-negative part of the) scores.
      tolerance: conjugate gradient stops when every query's residual is this fraction of its ``y``.
      max_iterations: and at the latest after this many steps.

    Raises:
      ValueError: ``alpha`` outside [0, 1), or scores whose gallery size is not the graph's.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"diffusion alpha must be in [0, 1), got {alpha}")
    scores = np.asarray(scores, np.float32)
    if scores.ndim != 2 or scores.shape[1] != len(graph):
        raise ValueError(f"scores of shape {scores.shape} against a graph of {len(graph)} gallery items")
    out = np.empty_like(scores)
    for rows in _row_chunks(scores.shape[0], len(graph) * max(graph.neighbours.shape[1], 1)):
        y = (np.maximum(scores[rows], 0.0) ** power).T  # (N, Qc)
        out[rows] = _conjugate_gradient(graph, alpha, y, tolerance, max_iterations).T
    return out


def _conjugate_gradient(graph: Graph, alpha: float, y: np.ndarray, tolerance: float, steps: int) -> np.ndarray:
    """Solves ``(I - alpha W) x = y`` column by column (every column at once)."""
    x = np.zeros_like(y, dtype=np.float64)
    r = y.astype(np.float64)
    p = r.copy()
    rr = (r * r).sum(0)
    stop = (tolerance**2) * np.maximum(rr, 1e-30)
    for _ in range(steps):
        if (rr <= stop).all():
            break
        ap = p - alpha * graph.apply(p)
        step = rr / np.maximum((p * ap).sum(0), 1e-30)
        x += step * p
        r -= step * ap
        rr_new = (r * r).sum(0)
        p = r + (rr_new / np.maximum(rr, 1e-30)) * p
        rr = rr_new
    return x.astype(np.float32)
