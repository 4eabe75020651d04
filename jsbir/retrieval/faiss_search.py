"""FAISS backends: exact ``IndexFlatIP`` / ``IndexBinaryFlat`` search under the tie rule, and approximate IVF.

FAISS orders tied scores as its heap leaves them, not by gallery index, and may cut a run of ties at the k-th
place on the wrong side. The exact backend therefore fetches a few more candidates than asked and re-sorts them by
(score, index) (``topk.sort_candidates``); for the rows whose k-th score still equals the last one fetched
(``topk.needs_more``: a run of ties may go on beyond), a range search fetches every item scoring at least that
much, so the result is exactly the numpy reference's ranking.

FAISS is tuned for the batch at hand when it is first imported here: its OpenMP threads are set to the cores this
process may run on, and query batches of ``BLAS_QUERIES`` or more take its BLAS matrix-product path (FAISS's own
default sends batches below 128,000 queries to the one-query-at-a-time SIMD scan, several times slower for a batch
of 100). Both are process-wide FAISS settings.
"""

from __future__ import annotations

import math
import os

import numpy as np

from jsbir.retrieval import topk

OVER_FETCH = 16  # extra candidates fetched at first
BLAS_QUERIES = 20  # query batches at least this large use FAISS's BLAS path (a matrix product), smaller ones its scan

_tuned = False


def cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the platform has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _faiss():
    global _tuned
    try:
        import faiss
    except ImportError as e:
        raise ImportError("the faiss backends need FAISS: pip install faiss-cpu") from e
    if not _tuned:  # once: a caller may set its own values afterwards
        faiss.omp_set_num_threads(cores())
        faiss.cvar.distance_compute_blas_threshold = BLAS_QUERIES
        _tuned = True
    return faiss


def _add_in_blocks(index, gallery: np.ndarray, dtype: type, block: int = 1 << 16) -> None:
    for start in range(0, len(gallery), block):  # a memory map is read one block at a time
        index.add(np.ascontiguousarray(gallery[start : start + block], dtype))


class FaissBackend:
    """Exact FAISS search on CPU, ties by gallery index.

    Args:
      gallery: (N, D) float32 embeddings (``IndexFlatIP``), or (N, ceil(bits / 8)) uint8 packed codes
        (``IndexBinaryFlat``).
      bits: None for inner-product search, else the code length for Hamming search.
    """

    def __init__(self, gallery: np.ndarray, bits: int | None = None):
        faiss = _faiss()
        self.bits, self.n = bits, len(gallery)
        if bits is None:
            self.index = faiss.IndexFlatIP(gallery.shape[1])
            _add_in_blocks(self.index, gallery, np.float32)
        else:
            self.index = faiss.IndexBinaryFlat(8 * gallery.shape[1])  # packbits zero-pads: padding bits never differ
            _add_in_blocks(self.index, gallery, np.uint8)

    def _raw(self, queries: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        scores, ids = self.index.search(queries, fetch)
        return (scores, ids) if self.bits is None else (-scores.astype(np.int32), ids)

    def _at_least(self, queries: np.ndarray, kth: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The top ``k`` of each query among every item scoring at least about its ``kth`` score (a range search:
        Hamming distance below -kth + 1; inner product above kth less a relative 1e-5, as FAISS's range search may
        round differently from its top-k search), sorted under the tie rule."""
        out_s, out_i = [], []
        for query, score in zip(queries, kth, strict=True):
            if self.bits is None:
                limits, scores, ids = self.index.range_search(query[None], float(score - 1e-5 * abs(score) - 1e-30))
            else:
                limits, distances, ids = self.index.range_search(query[None], int(-score) + 1)
                scores = -distances.astype(np.int32)
            if limits[1] < k:  # rounding left out a top-k item after all: sort the whole gallery
                scores, ids = self._raw(query[None], self.n)
            s, i = topk.sort_candidates(np.reshape(scores, (1, -1)), np.reshape(ids, (1, -1)), k)
            out_s.append(s[0])
            out_i.append(i[0])
        return np.stack(out_s), np.stack(out_i)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and (Q, k) int64 gallery indices, best first, ties by gallery index.

        Args:
          queries: (Q, D) float32 embeddings, or (Q, ceil(bits / 8)) uint8 packed codes.
          k: results per query, 1 <= k <= N.
        """
        queries = np.ascontiguousarray(queries, np.float32 if self.bits is None else np.uint8)
        fetch = min(self.n, k + OVER_FETCH)
        scores, ids = topk.sort_candidates(*self._raw(queries, fetch), fetch)
        best_s, best_i = scores[:, :k].copy(), ids[:, :k].copy()
        rows = np.flatnonzero(topk.needs_more(scores, k, fetch, self.n))
        if len(rows):
            best_s[rows], best_i[rows] = self._at_least(queries[rows], scores[rows, k - 1], k)
        return best_s, best_i.astype(np.int64)


class FaissIvfBackend:
    """Approximate inner-product search: FAISS ``IndexIVFFlat`` (k-means cells; ``nprobe`` of them searched).

    Args:
      gallery: (N, D) float32 embeddings.
      nlist: cells; default ``4 * sqrt(N)`` (at least 1, at most N / 39 so each has training points).
      nprobe: cells searched per query; more is slower and closer to exact.
      train_size: embeddings the k-means is trained on, evenly spaced over the gallery.
      seed: the k-means seed.
    """

    def __init__(self, gallery: np.ndarray, nlist: int | None = None, nprobe: int = 16, train_size: int = 1 << 17,
                 seed: int = 0):  # fmt: skip
        faiss = _faiss()
        n, dim = gallery.shape
        self.nlist = nlist or max(1, min(int(4 * math.sqrt(n)), n // 39))
        self.quantizer = faiss.IndexFlatIP(dim)
        self.index = faiss.IndexIVFFlat(self.quantizer, dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        self.index.cp.seed = seed
        sample = np.unique(np.linspace(0, n - 1, min(n, max(train_size, 39 * self.nlist))).astype(np.int64))
        self.index.train(np.ascontiguousarray(gallery[sample], np.float32))
        _add_in_blocks(self.index, gallery, np.float32)
        self.index.nprobe = self.nprobe = min(nprobe, self.nlist)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) approximate scores and indices (-1 where the probed cells hold fewer than k items)."""
        scores, ids = self.index.search(np.ascontiguousarray(queries, np.float32), k)
        return topk.sort_candidates(scores, ids, k)
