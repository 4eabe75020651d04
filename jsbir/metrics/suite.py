"""Every metric of a retrieval evaluation at once, keyed by names that say which convention each number uses.

`METRIC_DESCRIPTIONS` explains every key a report can hold; docs/metrics.md says whose code each one matches.
"""

from collections.abc import Sequence

import numpy as np

from jsbir.metrics.ranking import (
    AP_VARIANTS,
    MAP_AT_K_VARIANTS,
    PRECISION_VARIANTS,
    _ap_kernel,
    _check_k,
    _check_scores,
    _class_mean,
    _expected_random_ap,
    _Kernel,
    _map_at_k_kernel,
    _mean,
    _per_query,
    _precision_kernel,
    _target_ranks,
)

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
    "map@200[yelamarthi]": "Yelamarthi et al.: sum over the top 200 of rel_i * precision@i, / 200 (by 200 even "
    "when the gallery holds fewer items)",
    "prec@K[k]": "relevant items in the top K of the stable ranking / K (SEM-PCYC, SAKE)",
    "prec@K[min]": "ZSE-SBIR precision_eval: relevant items in the top min(K, R) / min(K, R), R the query's "
    "relevant items (R-precision when R < K); queries with R = 0 dropped (NaN-mean)",
    "map@all[chance]": "exact expected map@all[stable] of a uniformly random ranking with the "
    "same relevance counts: the floor any model must beat",
    "acc@K": "fine-grained: fraction of queries whose own gallery item has stable rank < K "
    "(strictly higher scores first, then ties by gallery index)",
    "rank[mean]": "fine-grained: mean over queries of the 1-based stable rank of the query's own gallery item",
    "rank[median]": "fine-grained: median over queries of the 1-based stable rank of the query's own gallery item",
    "domain_accuracy": "methods with a domain discriminator: share of the evaluation's first batch of sketches and "
    "of photos whose modality the sign of its mean discriminator logit gives (0.5: the domains no longer separate)",
}


def retrieval_per_query(
    scores: np.ndarray,
    query_labels: np.ndarray,
    gallery_labels: np.ndarray,
    ks: Sequence[int] = (10, 25, 100, 200),
) -> dict[str, np.ndarray]:
    """The per-query values behind `retrieval_metrics` (one sort per query), for any block of query rows.

    Each query's values depend on its own row alone, so the values of a query x gallery matrix scored in blocks of
    rows, concatenated, are those of the whole matrix, and `summarise_retrieval` of them gives the same numbers.

    Args:
      scores: (Q, N) similarities of Q queries (any block of rows) to the whole gallery.
      query_labels: (Q,) class of each of those queries.
      gallery_labels: (N,) class of each gallery item; relevant means the same class.
      ks: cut-offs for prec@K (mAP@200 is always at 200).

    Returns:
      (Q,) float64 arrays: "ap[exact]", "ap[stable]", "ap[voc]" (NaN for a query with no relevant item),
      "map@200[<variant>]", "prec@K[<variant>]" (NaN where the convention drops the query) and "positives" (the
      query's relevant items).
    """
    scores = _check_scores(scores)
    queries, gallery = np.asarray(query_labels), np.asarray(gallery_labels)
    if queries.shape != scores.shape[:1] or gallery.shape != scores.shape[1:]:
        raise ValueError(f"label shapes {queries.shape}, {gallery.shape} vs scores {scores.shape}")
    kernels: dict[str, _Kernel] = {f"ap[{v}]": _ap_kernel(v) for v in AP_VARIANTS}
    kernels.update({f"map@200[{v}]": _map_at_k_kernel(200, v) for v in MAP_AT_K_VARIANTS})
    for k in ks:
        kernels.update({f"prec@{k}[{v}]": _precision_kernel(k, v) for v in PRECISION_VARIANTS})
    kernels["positives"] = lambda s, r: r.sum(axis=1)
    return _per_query(scores, lambda rows: queries[rows, None] == gallery[None, :], kernels)


def summarise_retrieval(
    per_query: dict[str, np.ndarray], query_labels: np.ndarray, gallery_size: int
) -> dict[str, float]:
    """Every category-level metric from the per-query values of all queries (`retrieval_per_query`).

    Args:
      per_query: `retrieval_per_query`'s arrays for every query, in query order (other keys are ignored).
      query_labels: (Q,) class of each query (for the per-class mean).
      gallery_size: N, the gallery's size (for the chance level).

    Returns:
      The dict `retrieval_metrics` returns.
    """
    voc = per_query["ap[voc]"]
    out = {
        "map@all[exact]": _mean(np.nan_to_num(per_query["ap[exact]"], nan=0.0), drop_nan=False),
        "map@all[stable]": _mean(np.nan_to_num(per_query["ap[stable]"], nan=0.0), drop_nan=False),
        "map@all[voc,drop-empty]": _mean(voc, drop_nan=True),
        "map@all[class-mean]": _class_mean(voc, np.asarray(query_labels)),
    }
    for name, values in per_query.items():
        if name.startswith(("map@200[", "prec@")):
            out[name] = _mean(values, drop_nan=True)  # "sake" and "min" are NaN for a query with no relevant item
    out["map@all[chance]"] = float(np.mean(_expected_random_ap(per_query["positives"], gallery_size)))
    return out


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
    per = retrieval_per_query(scores, query_labels, gallery_labels, ks)
    return summarise_retrieval(per, query_labels, np.shape(scores)[1])


def target_ranks(scores: np.ndarray, target_index: np.ndarray) -> np.ndarray:
    """The 0-based stable rank of each query's own gallery item, for any block of query rows.

    Args:
      scores: (Q, N) similarities.
      target_index: (Q,) int gallery index of each query's own item.

    Returns:
      (Q,) int64 ranks: items of strictly higher score, then tied items of lower gallery index, come first.
    """
    return _target_ranks(scores, target_index)


def summarise_ranks(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """acc@K, and the mean and median rank, from every query's `target_ranks`.

    Args:
      ranks: (Q,) 0-based stable ranks of the queries' own items.
      ks: cut-offs.

    Returns:
      The dict `fine_grained_metrics` returns.
    """
    for k in ks:
        _check_k(k)
    out = {f"acc@{k}": float(np.mean(ranks < k)) for k in ks}
    out["rank[mean]"] = float(np.mean(ranks + 1))
    out["rank[median]"] = float(np.median(ranks + 1))
    return out


def fine_grained_metrics(
    scores: np.ndarray, target_index: np.ndarray, ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Instance-level acc@K for each K in ks, and the mean and median rank of the target (ranks computed once).

    Args:
      scores: (Q, N) similarities.
      target_index: (Q,) int gallery index of each query's own item.
      ks: cut-offs.

    Returns:
      {"acc@K": fraction of queries whose target has stable rank < K, "rank[mean]": mean 1-based stable rank of
      the target, "rank[median]": its median}.
    """
    for k in ks:
        _check_k(k)
    return summarise_ranks(_target_ranks(scores, target_index), ks)
