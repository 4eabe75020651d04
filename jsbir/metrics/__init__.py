"""Every retrieval metric convention of the SBIR field, named exactly, and ITQ; plain numpy.

No JAX, TensorFlow or sklearn here: metrics must give the same number wherever they run. ``ranking`` holds one
function per convention, ``hashing`` ITQ and Hamming ranking, ``diffusion``
re-ranking over the gallery's neighbour graph, ``suite`` the whole set a report holds, each number
keyed by a name that ``METRIC_DESCRIPTIONS`` explains (definitions and sources: docs/metrics.md).
"""

from jsbir.metrics.diffusion import Graph, diffuse, knn_graph
from jsbir.metrics.hashing import (
    ITQ_CONVENTIONS,
    ITQ_UPDATES,
    ItqModel,
    fit_itq,
    hamming_distance,
    hamming_scores,
    itq_codes,
    pack_codes,
)
from jsbir.metrics.ranking import (
    AP_VARIANTS,
    MAP_AT_K_VARIANTS,
    PRECISION_VARIANTS,
    accuracy_at_k,
    average_precision,
    chance_map,
    class_mean_average_precision,
    map_at_k,
    mean_average_precision,
    precision_at_k,
    rank,
)
from jsbir.metrics.suite import (
    METRIC_DESCRIPTIONS,
    fine_grained_metrics,
    retrieval_metrics,
    retrieval_per_query,
    summarise_ranks,
    summarise_retrieval,
    target_ranks,
)

__all__ = [
    "AP_VARIANTS",
    "ITQ_CONVENTIONS",
    "ITQ_UPDATES",
    "MAP_AT_K_VARIANTS",
    "METRIC_DESCRIPTIONS",
    "PRECISION_VARIANTS",
    "Graph",
    "ItqModel",
    "accuracy_at_k",
    "average_precision",
    "chance_map",
    "class_mean_average_precision",
    "diffuse",
    "fine_grained_metrics",
    "fit_itq",
    "hamming_distance",
    "hamming_scores",
    "itq_codes",
    "knn_graph",
    "map_at_k",
    "mean_average_precision",
    "pack_codes",
    "precision_at_k",
    "rank",
    "retrieval_metrics",
    "retrieval_per_query",
    "summarise_ranks",
    "summarise_retrieval",
    "target_ranks",
]
