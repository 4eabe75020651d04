"""The one tie rule of every search backend, in plain numpy: descending score, ties broken by gallery index.

``numpy_topk`` is the brute-force reference the other backends are tested against; ``sort_candidates`` re-sorts a
backend's candidate lists under the rule (FAISS does not order tied scores by index), and ``needs_more`` says which
rows of an over-fetched candidate list may miss a tied item at the cut-off, so the caller fetches those again.
"""

from __future__ import annotations

import numpy as np

from jsbir.metrics import hamming_distance

# Gallery rows scored at once by the numpy reference: (queries, BLOCK) temporaries stay small.
BLOCK = 1 << 15


def sort_candidates(scores: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` of each row of candidates under the tie rule.

    Args:
      scores: (Q, C) candidate scores, higher = closer.
      ids: (Q, C) their gallery indices (each at most once per row; -1 marks an empty slot, dropped last).
      k: how many to keep, at most C.

    Returns:
      (Q, k) scores and (Q, k) int64 gallery indices, best first, ties by gallery index.
    """
    scores, ids = np.asarray(scores), np.asarray(ids, np.int64)
    # + 0.0 makes -0.0 and +0.0 one value; empty slots sort after every real candidate.
    key = np.where(ids < 0, np.inf, -(scores.astype(np.float64) + 0.0))
    order = np.lexsort((np.where(ids < 0, np.iinfo(np.int64).max, ids), key), axis=-1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(ids, order, axis=1)


def needs_more(sorted_scores: np.ndarray, k: int, fetched: int, total: int) -> np.ndarray:
    """(Q,) bool: rows whose k-th best score equals the last fetched one, so an unfetched item of a lower index
    may tie with it; every other row's top k is exact (any unfetched item scores below the k-th)."""
    if fetched >= total:
        return np.zeros(len(sorted_scores), bool)
    return sorted_scores[:, k - 1] == sorted_scores[:, fetched - 1]


def scores_block(queries: np.ndarray, block: np.ndarray, bits: int | None) -> np.ndarray:
    """(Q, B) scores: dot products of float rows (``bits`` None), else minus the Hamming distance of packed codes."""
    if bits is None:
        return np.asarray(queries, np.float32) @ np.asarray(block, np.float32).T
    return -hamming_distance(queries, np.asarray(block), bits)


def numpy_topk(
    queries: np.ndarray, gallery: np.ndarray, k: int, bits: int | None = None, block: int = BLOCK
) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force top ``k``, gallery block by block (a stable full sort of each block, then a merge).

    Args:
      queries: (Q, D) float32 embeddings, or (Q, ceil(bits / 8)) uint8 packed codes.
      gallery: (N, D) or (N, ceil(bits / 8)) likewise (a memory map is read one block at a time).
      k: results per query, 1 <= k <= N.
      bits: None for inner-product search, else the code length for Hamming search.
      block: gallery rows per block.

    Returns:
      (Q, k) scores (float32 dot products, or int32 minus Hamming distances) and (Q, k) int64 gallery indices.
    """
    best_s = best_i = None
    for start in range(0, len(gallery), block):
        s = scores_block(queries, gallery[start : start + block], bits)
        order = np.argsort(-(s.astype(np.float64) + 0.0), axis=1, kind="stable")[:, :k]
        s, i = np.take_along_axis(s, order, axis=1), order + start
        if best_s is not None:  # earlier blocks first: a stable merge keeps ties in index order
            s, i = sort_candidates(np.concatenate([best_s, s], 1), np.concatenate([best_i, i], 1), k)
        best_s, best_i = s, i
    return best_s, best_i.astype(np.int64)
