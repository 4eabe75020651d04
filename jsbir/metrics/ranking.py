"""Ranking metrics, one function per convention of the SBIR field; plain numpy.

Conventions (docs/metrics.md has each variant's definition and whose code it matches):
- `scores` (Q, N): higher = more similar. `relevant` (Q, N) bool. NaN scores are a ValueError, since
  where a NaN sorts differs between implementations and would silently change the ranking.
- Ranking is deterministic: descending score, ties broken by gallery index (a stable sort, with -0.0
  and +0.0 equal). The peers' code sorts with an unstable argsort, so their numbers on tied scores
  (hash codes, half precision) depend on the sort implementation. The exception is sklearn's
  convention ("exact" AP, and SEM-PCYC's mAP@K which calls it): there a run of tied scores is one
  threshold, so tie order cannot matter.
- A cut-off k larger than the gallery is clamped to N (SAKE's and SEM-PCYC's code do the same), except where a
  convention divides by k itself (Yelamarthi's mAP@k divides by k whatever the gallery size).
- Queries are processed in chunks (`_CHUNK_ELEMS` elements of (rows, N) temporaries) so that a
  10k x 10k evaluation stays within a few hundred MB.
"""

from collections.abc import Callable, Iterator, Sequence

import numpy as np

# About 32 MB per float64/int64 temporary; a chunk holds a handful of them.
_CHUNK_ELEMS = 1 << 22

AP_VARIANTS = ("exact", "stable", "voc")
MAP_AT_K_VARIANTS = ("sempcyc", "sake", "yelamarthi")
PRECISION_VARIANTS = ("k", "min")

_Kernel = Callable[[np.ndarray, np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- input handling


def _check_variant(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r}; expected one of {tuple(allowed)}")


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"scores must be a non-empty (Q, N) array, got shape {scores.shape}")
    if scores.dtype.kind not in "biuf":
        raise ValueError(f"scores must be real numbers, got dtype {scores.dtype}")
    return scores


def _check_relevant(relevant: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    relevant = np.asarray(relevant)
    if relevant.shape != shape:
        raise ValueError(f"relevant has shape {relevant.shape}, scores have {shape}")
    return relevant.astype(bool, copy=False)


def _row_chunks(rows: int, row_size: int) -> Iterator[slice]:
    step = max(1, _CHUNK_ELEMS // max(row_size, 1))
    for start in range(0, rows, step):
        yield slice(start, min(rows, start + step))


def _sortable(block: np.ndarray) -> np.ndarray:
    # Integers become float64 so that negating them cannot wrap (uint8); + 0.0 turns -0.0 into +0.0
    # so no sort implementation can separate the two zeros.
    if block.dtype.kind != "f":
        block = block.astype(np.float64)
    if np.isnan(block).any():
        raise ValueError("scores contain NaN; rankings with NaN are implementation-defined")
    return block + 0.0


def _descending_order(block: np.ndarray) -> np.ndarray:
    """``argsort(-block, axis=1, kind="stable")`` of a `_sortable` block: descending score, ties by column."""
    if block.dtype != np.float32 or block.shape[1] >= 1 << 32:
        return np.argsort(-block, axis=1, kind="stable")
    # One distinct 64-bit key per item: an order-reversing image of the float32 score in the high half (sign-magnitude
    # bits mapped to an ascending unsigned order, then complemented), the column in the low half. Sorting the keys,
    # which numpy does with a vectorised unstable sort, is the stable ranking, several times faster than argsort.
    bits = block.view(np.uint32)
    ascending = np.where(bits >> 31, ~bits, bits | np.uint32(1 << 31))
    keys = (~ascending).astype(np.uint64) << np.uint64(32) | np.arange(block.shape[1], dtype=np.uint64)
    keys.sort(axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.intp)


def _per_query(
    scores: np.ndarray, relevant: Callable[[slice], np.ndarray], kernels: dict[str, _Kernel]
) -> dict[str, np.ndarray]:
    """Sorts each chunk of queries once; evaluates every kernel on (sorted scores, sorted rel)."""
    out = {name: np.empty(scores.shape[0], np.float64) for name in kernels}
    for rows in _row_chunks(*scores.shape):
        block = _sortable(scores[rows])
        order = _descending_order(block)
        s = np.take_along_axis(block, order, axis=1)
        r = np.take_along_axis(relevant(rows), order, axis=1)
        for name, kernel in kernels.items():
            out[name][rows] = kernel(s, r)
    return out


# ----------------------------------------------------------------------------- per-query kernels


def _divide(num: np.ndarray, den: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(num.shape, empty, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _precision_curve(r: np.ndarray) -> np.ndarray:
    return np.cumsum(r, axis=1) / np.arange(1, r.shape[1] + 1)


def _ap_tie_grouped(s: np.ndarray, r: np.ndarray, empty: float) -> np.ndarray:
    # sklearn: AP = sum_n (R_n - R_{n-1}) P_n over distinct thresholds. Each positive adds 1/R times
    # the precision at the END of its run of tied scores, which is what we take here.
    n = s.shape[1]
    is_last = np.ones(s.shape, dtype=bool)
    is_last[:, :-1] = s[:, :-1] != s[:, 1:]
    last_index = np.where(is_last, np.arange(n), n)
    run_end = np.minimum.accumulate(last_index[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(_precision_curve(r), run_end, axis=1)
    return _divide((r * precision_at_end).sum(axis=1), r.sum(axis=1), empty)


def _ap_stable(r: np.ndarray, positives: np.ndarray) -> np.ndarray:
    return _divide((r * _precision_curve(r)).sum(axis=1), positives, np.nan)


def _ap_voc(r: np.ndarray, positives: np.ndarray) -> np.ndarray:
    # VOC interpolation: precision at rank i becomes the best precision at any rank >= i.
    interpolated = np.maximum.accumulate(_precision_curve(r)[:, ::-1], axis=1)[:, ::-1]
    return _divide((r * interpolated).sum(axis=1), positives, np.nan)


def _ap_kernel(variant: str) -> _Kernel:
    _check_variant("AP variant", variant, AP_VARIANTS)
    if variant == "exact":
        return lambda s, r: _ap_tie_grouped(s, r, np.nan)
    if variant == "stable":
        return lambda s, r: _ap_stable(r, r.sum(axis=1))
    return lambda s, r: _ap_voc(r, r.sum(axis=1))


def _map_at_k_kernel(k: int, variant: str) -> _Kernel:
    _check_variant("mAP@k variant", variant, MAP_AT_K_VARIANTS)
    _check_k(k)

    def kernel(s: np.ndarray, r: np.ndarray) -> np.ndarray:
        kk = min(k, r.shape[1])
        if variant == "sempcyc":
            return _ap_tie_grouped(s[:, :kk], r[:, :kk], 0.0)
        if variant == "sake":
            return _ap_voc(r[:, :kk], np.minimum(kk, r.sum(axis=1)))
        return (r[:, :kk] * _precision_curve(r[:, :kk])).sum(axis=1) / k  # / k even when N < k

    return kernel


def _precision_kernel(k: int, variant: str) -> _Kernel:
    _check_variant("precision variant", variant, PRECISION_VARIANTS)
    _check_k(k)

    def kernel(s: np.ndarray, r: np.ndarray) -> np.ndarray:
        if variant == "k":
            kk = min(k, r.shape[1])
            return r[:, :kk].sum(axis=1) / kk
        # ZSE-SBIR precision_eval: relevance averaged over the first min(k, R) ranks; R = 0 gives NaN (dropped).
        depth = np.minimum(k, r.sum(axis=1))  # <= min(k, N): the hits lie in the first k columns
        top = np.cumsum(r[:, : min(k, r.shape[1])], axis=1)
        hits = np.take_along_axis(top, np.maximum(depth - 1, 0)[:, None], axis=1)[:, 0]
        return _divide(hits, depth, np.nan)

    return kernel


def _check_k(k: int) -> None:
    if int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")


def _mean(values: np.ndarray, drop_nan: bool) -> float:
    if drop_nan:
        values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def _evaluate(scores: np.ndarray, relevant: np.ndarray, kernel: _Kernel) -> np.ndarray:
    scores = _check_scores(scores)
    relevant = _check_relevant(relevant, scores.shape)
    return _per_query(scores, lambda rows: relevant[rows], {"v": kernel})["v"]


# ----------------------------------------------------------------------------- public metrics


def rank(scores: np.ndarray) -> np.ndarray:
    """Ranks the gallery for each query: descending score, ties by gallery index.

    Args:
      scores: (Q, N) similarities.

    Returns:
      (Q, N) gallery indices, best first.
    """
    scores = _check_scores(scores)
    out = np.empty(scores.shape, dtype=np.intp)
    for rows in _row_chunks(*scores.shape):
        out[rows] = _descending_order(_sortable(scores[rows]))
    return out


def average_precision(scores: np.ndarray, relevant: np.ndarray, variant: str = "exact") -> np.ndarray:
    """Average precision of each query over the whole gallery.

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      variant: "exact" (sklearn `average_precision_score`: a run of tied scores is one threshold,
        AP = sum_n (R_n - R_{n-1}) P_n), "stable" (mean over relevant items of the precision at
        their stable rank) or "voc" (VOC-interpolated: precision made non-increasing from the
        right, summed over recall steps; SAKE/DSN/ZSE-SBIR).

    Returns:
      (Q,) float64 AP; NaN for a query with no relevant item (the mean functions decide).
    """
    return _evaluate(scores, relevant, _ap_kernel(variant))


def mean_average_precision(
    scores: np.ndarray, relevant: np.ndarray, variant: str = "exact", no_positive: str = "zero"
) -> float:
    """mAP@all: the mean over queries of `average_precision`.

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      variant: an `average_precision` variant.
      no_positive: "zero" counts a query with no relevant item as AP 0 (sklearn, SEM-PCYC);
        "drop" leaves it out (the NaN-mean of the VOC-style code).

    Returns:
      The mean AP (NaN if "drop" leaves no query).
    """
    _check_variant("no_positive policy", no_positive, ("zero", "drop"))
    aps = average_precision(scores, relevant, variant)
    if no_positive == "zero":
        return _mean(np.nan_to_num(aps, nan=0.0), drop_nan=False)
    return _mean(aps, drop_nan=True)


def class_mean_average_precision(
    scores: np.ndarray, relevant: np.ndarray, query_labels: np.ndarray, variant: str = "exact"
) -> float:
    """The mean over query classes of the per-class mean AP (as DSN reports it).

    Within a class, queries with no relevant item are dropped (DSN's NaN-mean); a class left with
    no query is skipped (where DSN's code would turn the whole mean into NaN).

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      query_labels: (Q,) class of each query.
      variant: an `average_precision` variant (DSN's code uses "voc").

    Returns:
      The mean of class means (NaN if no class has a query with a relevant item).
    """
    return _class_mean(average_precision(scores, relevant, variant), query_labels)


def _class_mean(aps: np.ndarray, query_labels: np.ndarray) -> float:
    labels = np.asarray(query_labels)
    if labels.shape != aps.shape:
        raise ValueError(f"query_labels has shape {labels.shape}, expected {aps.shape}")
    means = [_mean(aps[labels == c], drop_nan=True) for c in np.unique(labels)]
    return _mean(np.asarray(means, dtype=np.float64), drop_nan=True)


def map_at_k(scores: np.ndarray, relevant: np.ndarray, k: int = 200, variant: str = "sempcyc") -> float:
    """mAP@k, mean over queries, in one of the field's three conventions.

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      k: cut-off (clamped to N for the ranks read; "yelamarthi" still divides by k).
      variant: "sempcyc" (SEM-PCYC `apsak`: sklearn AP of the top k alone, i.e. sum of
        rel_i * P@i over the top k / relevant items inside the top k, tied scores inside it
        grouped; 0 if none there), "sake" (SAKE/ZSE-SBIR `eval_AP_inner(top=k)`: VOC-interpolated
        precision summed over the relevant items of the top k / min(k, relevant items); a query
        with no relevant item is NaN there and is dropped) or "yelamarthi" (sum of rel_i * P@i
        over the top k / k, by k even when the gallery is smaller, as their code does).

    Returns:
      The mean over queries.
    """
    return _mean(_evaluate(scores, relevant, _map_at_k_kernel(k, variant)), drop_nan=True)


def precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int, variant: str = "k") -> float:
    """Prec@k, mean over queries.

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      k: cut-off (clamped to N).
      variant: "k" (hits in the top k / k) or "min" (ZSE-SBIR's `precision_eval`: hits in the top
        min(k, R) / min(k, R), R the query's relevant items, i.e. R-precision when R < k; a query with
        no relevant item is dropped from the mean).

    Returns:
      The mean over queries.
    """
    return _mean(_evaluate(scores, relevant, _precision_kernel(k, variant)), drop_nan=True)


def _target_ranks(scores: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    scores = _check_scores(scores)
    target = np.asarray(target_index)
    q, n = scores.shape
    if target.shape != (q,) or target.dtype.kind not in "iu":
        raise ValueError(f"target_index must be an int array of shape ({q},), got {target.shape}")
    if target.min() < 0 or target.max() >= n:
        raise ValueError(f"target_index out of range [0, {n})")
    ranks = np.empty(q, dtype=np.int64)
    for rows in _row_chunks(q, n):
        block, t = _sortable(scores[rows]), target[rows]
        own = block[np.arange(block.shape[0]), t][:, None]
        # The stable rank without a sort: strictly better items, then tied items of lower index.
        ahead = (block > own) | ((block == own) & (np.arange(n) < t[:, None]))
        ranks[rows] = ahead.sum(axis=1)
    return ranks


def accuracy_at_k(scores: np.ndarray, target_index: np.ndarray, k: int) -> float:
    """acc@k (fine-grained): the fraction of queries whose own gallery item ranks in the top k.

    Args:
      scores: (Q, N) similarities.
      target_index: (Q,) int gallery index of each query's own item.
      k: cut-off.

    Returns:
      The fraction of queries whose target has stable rank < k.
    """
    _check_k(k)
    return float(np.mean(_target_ranks(scores, target_index) < k))


def _expected_random_ap(positives: np.ndarray, n: int) -> np.ndarray:
    # A positive at rank i (uniform) has on average (i-1)(R-1)/(N-1) other positives above it, so
    # E[AP] = (1/N) sum_i (1 + (i-1)(R-1)/(N-1)) / i = (H_N + (R-1)/(N-1) (N - H_N)) / N.
    positives = np.asarray(positives, dtype=np.float64)
    if n == 1:
        return (positives > 0).astype(np.float64)
    harmonic = float(np.sum(1.0 / np.arange(1, n + 1)))
    expected = (harmonic + (positives - 1) / (n - 1) * (n - harmonic)) / n
    return np.where(positives > 0, expected, 0.0)


def chance_map(relevant: np.ndarray) -> float:
    """Exact expected mAP@all (stable AP, no_positive="zero") of a uniformly random ranking.

    Args:
      relevant: (Q, N) bool relevance.

    Returns:
      The mean over queries of E[AP] for R relevant items among N.
    """
    relevant = np.asarray(relevant, dtype=bool)
    if relevant.ndim != 2 or relevant.size == 0:
        raise ValueError(f"relevant must be a non-empty (Q, N) array, got {relevant.shape}")
    return float(np.mean(_expected_random_ap(relevant.sum(axis=1), relevant.shape[1])))
