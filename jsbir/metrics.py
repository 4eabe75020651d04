"""Every retrieval metric convention of the SBIR field, named exactly, and ITQ; plain numpy.

No JAX, TensorFlow or sklearn here: metrics must give the same number wherever they run.
Conventions shared by all functions (METHODS.md, "Metrics"):
- `scores` (Q, N): higher = more similar. `relevant` (Q, N) bool. NaN scores are a ValueError, since
  where a NaN sorts differs between implementations and would silently change the ranking.
- Ranking is deterministic: descending score, ties broken by gallery index (a stable sort, with -0.0
  and +0.0 equal). The peers' code sorts with an unstable argsort, so their numbers on tied scores
  (hash codes, half precision) depend on the sort implementation. The exception is sklearn's
  convention ("exact" AP, and SEM-PCYC's mAP@K which calls it): there a run of tied scores is one
  threshold, so tie order cannot matter.
- A cut-off k larger than the gallery is clamped to N (SAKE's and SEM-PCYC's code do the same).
- Queries are processed in chunks (`_CHUNK_ELEMS` elements of (rows, N) temporaries) so that a
  10k x 10k evaluation stays within a few hundred MB.
Each number reported by `retrieval_metrics` / `fine_grained_metrics` has a key explained by
`METRIC_DESCRIPTIONS`, so a report always says which convention it used.
"""

import dataclasses
import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np

# About 32 MB per float64/int64 temporary; a chunk holds a handful of them.
_CHUNK_ELEMS = 1 << 22

AP_VARIANTS = ("exact", "stable", "voc")
MAP_AT_K_VARIANTS = ("sempcyc", "sake", "yelamarthi")
PRECISION_VARIANTS = ("k", "min")
ITQ_UPDATES = ("procrustes", "sempcyc")

METRIC_DESCRIPTIONS: dict[str, str] = {
    "map@all[exact]": "sklearn average_precision_score per query (tied scores form one threshold), "
    "mean over queries; a query with no relevant item counts 0 (sklearn, SEM-PCYC)",
    "map@all[stable]": "non-interpolated AP (mean precision at each relevant item's rank) on the "
    "stable ranking, mean over queries; a query with no relevant item counts 0",
    "map@all[voc,drop-empty]": "VOC-interpolated AP (precision made non-increasing from the right, "
    "SAKE/DSN/ZSE-SBIR) on the stable ranking; queries with no relevant item dropped (NaN-mean)",
    "map@all[class-mean]": "DSN: VOC-interpolated AP per query, NaN-mean within each query class, "
    "then the mean over classes",
    "map@200[sempcyc]": "SEM-PCYC apsak: sklearn AP of the top 200 alone (ties in it grouped), so "
    "divided by the relevant items inside the top 200; 0 if none there",
    "map@200[sake]": "SAKE/ZSE-SBIR eval_AP_inner(top=200): VOC-interpolated AP of the top 200 "
    "divided by min(200, relevant items); queries with no relevant item dropped",
    "map@200[yelamarthi]": "Yelamarthi et al.: sum over the top 200 of rel_i * precision@i, / 200",
    "prec@K[k]": "relevant items in the top K of the stable ranking / K (SEM-PCYC, SAKE)",
    "prec@K[min]": "relevant items in the top K / min(K, relevant items) (ZSE-SBIR); 0 if none",
    "map@all[chance]": "exact expected map@all[stable] of a uniformly random ranking with the "
    "same relevance counts: the floor any model must beat",
    "acc@K": "fine-grained: fraction of queries whose own gallery item has stable rank < K "
    "(strictly higher scores first, then ties by gallery index)",
}

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


def _per_query(
    scores: np.ndarray, relevant: Callable[[slice], np.ndarray], kernels: dict[str, _Kernel]
) -> dict[str, np.ndarray]:
    """Sorts each chunk of queries once; evaluates every kernel on (sorted scores, sorted rel)."""
    out = {name: np.empty(scores.shape[0], np.float64) for name in kernels}
    for rows in _row_chunks(*scores.shape):
        block = _sortable(scores[rows])
        order = np.argsort(-block, axis=1, kind="stable")
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
        return (r[:, :kk] * _precision_curve(r[:, :kk])).sum(axis=1) / kk

    return kernel


def _precision_kernel(k: int, variant: str) -> _Kernel:
    _check_variant("precision variant", variant, PRECISION_VARIANTS)
    _check_k(k)

    def kernel(s: np.ndarray, r: np.ndarray) -> np.ndarray:
        kk = min(k, r.shape[1])
        hits = r[:, :kk].sum(axis=1)
        if variant == "k":
            return hits / kk
        return _divide(hits, np.minimum(kk, r.sum(axis=1)), 0.0)

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
        out[rows] = np.argsort(-_sortable(scores[rows]), axis=1, kind="stable")
    return out


def average_precision(
    scores: np.ndarray, relevant: np.ndarray, variant: str = "exact"
) -> np.ndarray:
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


def map_at_k(
    scores: np.ndarray, relevant: np.ndarray, k: int = 200, variant: str = "sempcyc"
) -> float:
    """mAP@k, mean over queries, in one of the field's three conventions.

    Args:
      scores: (Q, N) similarities.
      relevant: (Q, N) bool relevance.
      k: cut-off (clamped to N).
      variant: "sempcyc" (SEM-PCYC `apsak`: sklearn AP of the top k alone, i.e. sum of
        rel_i * P@i over the top k / relevant items inside the top k, tied scores inside it
        grouped; 0 if none there), "sake" (SAKE/ZSE-SBIR `eval_AP_inner(top=k)`: VOC-interpolated
        precision summed over the relevant items of the top k / min(k, relevant items); a query
        with no relevant item is NaN there and is dropped) or "yelamarthi" (sum of rel_i * P@i
        over the top k / k).

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
      variant: "k" (hits in the top k / k) or "min" (hits / min(k, relevant items), ZSE-SBIR; a
        query with no relevant item counts 0).

    Returns:
      The mean over queries.
    """
    return _mean(_evaluate(scores, relevant, _precision_kernel(k, variant)), drop_nan=False)


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


def retrieval_metrics(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (10, 25, 100, 200),
) -> dict[str, float]:
    """Every category-level metric at once (one sort per query), keyed as in METRIC_DESCRIPTIONS.

    Args:
      scores: (Q, N) similarities.
      query_labels: (Q,) class of each query.
      gallery_labels: (N,) class of each gallery item; relevant means the same class.
      ks: cut-offs for prec@K (mAP@200 is always at 200).

    Returns:
      "map@all[exact]", "map@all[stable]", "map@all[voc,drop-empty]", "map@all[class-mean]",
      "map@200[sempcyc]", "map@200[sake]", "map@200[yelamarthi]", "prec@K[k]" and "prec@K[min]"
      for each K in ks, and "map@all[chance]", each a float.
    """
    scores = _check_scores(scores)
    queries, gallery = np.asarray(query_labels), np.asarray(gallery_labels)
    if queries.shape != scores.shape[:1] or gallery.shape != scores.shape[1:]:
        raise ValueError(f"label shapes {queries.shape}, {gallery.shape} vs scores {scores.shape}")
    kernels: dict[str, _Kernel] = {v: _ap_kernel(v) for v in AP_VARIANTS}
    kernels.update({f"map@200[{v}]": _map_at_k_kernel(200, v) for v in MAP_AT_K_VARIANTS})
    for k in ks:
        kernels.update({f"prec@{k}[{v}]": _precision_kernel(k, v) for v in PRECISION_VARIANTS})
    kernels["positives"] = lambda s, r: r.sum(axis=1)
    per = _per_query(scores, lambda rows: queries[rows, None] == gallery[None, :], kernels)

    out = {
        "map@all[exact]": _mean(np.nan_to_num(per.pop("exact"), nan=0.0), drop_nan=False),
        "map@all[stable]": _mean(np.nan_to_num(per.pop("stable"), nan=0.0), drop_nan=False),
        "map@all[voc,drop-empty]": _mean(per["voc"], drop_nan=True),
        "map@all[class-mean]": _class_mean(per.pop("voc"), queries),
    }
    positives = per.pop("positives")
    for name, values in per.items():
        out[name] = _mean(values, drop_nan=True)  # only "sake" has NaN (no relevant item)
    out["map@all[chance]"] = float(np.mean(_expected_random_ap(positives, scores.shape[1])))
    return out


def fine_grained_metrics(
    scores: np.ndarray, target_index: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Instance-level acc@K for each K in ks (ranks computed once).

    Args:
      scores: (Q, N) similarities.
      target_index: (Q,) int gallery index of each query's own item.
      ks: cut-offs.

    Returns:
      {"acc@K": fraction of queries whose target has stable rank < K}.
    """
    for k in ks:
        _check_k(k)
    ranks = _target_ranks(scores, target_index)
    return {f"acc@{k}": float(np.mean(ranks < k)) for k in ks}


# ----------------------------------------------------------------------------- ITQ and Hamming


@dataclasses.dataclass(frozen=True, eq=False)
class ItqModel:
    """A fitted ITQ binariser: code = sign(((x - mean) @ projection) @ rotation), as +1/-1.

    Attributes:
      mean: (d,) feature mean removed before projecting.
      projection: (d, bits) top principal directions, each signed so that its largest-magnitude
        component is positive (eigenvector signs are otherwise arbitrary, and so would be codes).
      rotation: (bits, bits) orthogonal rotation learnt by ITQ.
      losses: quantisation loss ||B - V R||_F^2 after each iteration's rotation update.
    """

    mean: np.ndarray
    projection: np.ndarray
    rotation: np.ndarray
    losses: list[float]

    @property
    def bits(self) -> int:
        return self.rotation.shape[0]

    def encode(self, features: np.ndarray) -> np.ndarray:
        """Encodes (..., d) features as (..., bits) int8 codes in {-1, +1} (+1 where > 0)."""
        z = (np.asarray(features, dtype=np.float64) - self.mean) @ self.projection @ self.rotation
        return np.where(z > 0, 1, -1).astype(np.int8)


def _rotation_update(b: np.ndarray, v: np.ndarray, update: str) -> np.ndarray:
    # argmin_R ||B - V R||_F over orthogonal R maximises tr(R^T V^T B); with B^T V = U S Vh,
    # V^T B = Vh^T S U^T, so R = Vh^T U^T attains tr(S). numpy returns Vh, not V: the copied code
    # forgot that and uses Vh @ U^T.
    u, _, vh = np.linalg.svd(b.T @ v)
    return vh.T @ u.T if update == "procrustes" else vh @ u.T


def fit_itq(
    features: np.ndarray,
    bits: int,
    iterations: int = 50,
    seed: int = 0,
    update: str = "procrustes",
) -> ItqModel:
    """Fits ITQ (Gong & Lazebnik, CVPR 2011): PCA to `bits` dims, then a learnt rotation.

    Each iteration sets B = sign(V R) and then R to the orthogonal Procrustes solution of
    min_R ||B - V R||_F: with the SVD B^T V = U S Vh, R = Vh^T U^T. Both steps can only lower the
    loss, so `losses` is non-increasing.

    Args:
      features: (n, d) training features.
      bits: code length, at most d.
      iterations: number of (B, R) alternations (the field uses 50).
      seed: seed of the random orthogonal initial rotation.
      update: "procrustes" (correct) or "sempcyc", the update of the widely copied SEM-PCYC/DSN
        `itq.py`, R = Vh @ U^T (numpy's SVD returns V already transposed, so this applies the
        transpose of the right factor). It is offered only to reproduce published codes: it does
        not solve the Procrustes problem and its loss is not monotone.

    Returns:
      The fitted ItqModel.
    """
    _check_variant("ITQ update", update, ITQ_UPDATES)
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be a non-empty (n, d) array, got {x.shape}")
    if int(bits) != bits or not 1 <= bits <= x.shape[1]:
        raise ValueError(f"bits={bits} must be an integer in [1, d={x.shape[1]}]")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    mean = x.mean(axis=0)
    x = x - mean
    eigenvalues, eigenvectors = np.linalg.eigh(x.T @ x / max(x.shape[0] - 1, 1))
    projection = eigenvectors[:, np.argsort(-eigenvalues, kind="stable")[:bits]]
    pivots = np.argmax(np.abs(projection), axis=0)
    projection = projection * np.sign(projection[pivots, np.arange(bits)])
    v = x @ projection

    rotation, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((bits, bits)))
    losses = []
    for _ in range(iterations):
        b = np.where(v @ rotation > 0, 1.0, -1.0)
        rotation = _rotation_update(b, v, update)
        losses.append(float(np.sum((b - v @ rotation) ** 2)))
    return ItqModel(mean=mean, projection=projection, rotation=rotation, losses=losses)


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """Packs (..., bits) codes (+1/-1, or 1/0) into (..., ceil(bits / 8)) uint8, bit = code > 0."""
    return np.packbits(np.asarray(codes) > 0, axis=-1)


_HAS_BITWISE_COUNT = hasattr(np, "bitwise_count")  # numpy >= 2.0
_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _as_words(packed: np.ndarray) -> np.ndarray:
    if not _HAS_BITWISE_COUNT:
        return packed
    # Zero padding to whole uint64 words leaves the XOR popcount unchanged and is 8x fewer ops.
    padded = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 8)))
    return np.ascontiguousarray(padded).view(np.uint64)


def hamming_distance(packed_a: np.ndarray, packed_b: np.ndarray, bits: int) -> np.ndarray:
    """Hamming distances between packed codes (popcount of XOR).

    Args:
      packed_a: (Qa, ceil(bits / 8)) uint8 from `pack_codes`.
      packed_b: (Qb, ceil(bits / 8)) uint8 from `pack_codes`.
      bits: code length; padding bits beyond it are ignored.

    Returns:
      (Qa, Qb) int32 distances.
    """
    nbytes = math.ceil(bits / 8)
    a, b = np.asarray(packed_a, dtype=np.uint8), np.asarray(packed_b, dtype=np.uint8)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != nbytes or b.shape[1] != nbytes:
        raise ValueError(f"packed codes {a.shape}, {b.shape} do not hold {bits} bits per row")
    mask = np.full(nbytes, 0xFF, dtype=np.uint8)
    if bits % 8:
        mask[-1] = (0xFF << (8 - bits % 8)) & 0xFF  # packbits fills the most significant bit first
    a, b = _as_words(a & mask), _as_words(b & mask)
    out = np.empty((a.shape[0], b.shape[0]), dtype=np.int32)
    for rows in _row_chunks(a.shape[0], b.shape[0] * b.shape[1]):
        xor = a[rows, None, :] ^ b[None, :, :]
        counts = np.bitwise_count(xor) if _HAS_BITWISE_COUNT else _POPCOUNT8[xor]
        out[rows] = counts.sum(axis=-1, dtype=np.int32)
    return out


def hamming_scores(packed_q: np.ndarray, packed_g: np.ndarray, bits: int) -> np.ndarray:
    """Similarity scores for hash codes: -Hamming distance as float32.

    Feeding these to the metric functions ranks by Hamming distance; the many ties between codes
    are broken stably by gallery index (or grouped, for the "exact"/"sempcyc" conventions).

    Args:
      packed_q: (Q, ceil(bits / 8)) uint8 query codes.
      packed_g: (N, ceil(bits / 8)) uint8 gallery codes.
      bits: code length.

    Returns:
      (Q, N) float32 scores, higher = closer.
    """
    return -hamming_distance(packed_q, packed_g, bits).astype(np.float32)
