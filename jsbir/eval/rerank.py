"""Re-ranking of the float scores by diffusion over the gallery's neighbour graph (``config.eval.rerank``).

``eval.rerank = "diffusion"`` spreads each query's scores along a mutual k-nearest-neighbour graph of the gallery
(``jsbir.metrics.diffusion``; ``eval.rerank_k`` neighbours, ``eval.rerank_alpha``). The graph needs no labels and
never sees a query: it is what an index could build offline from its photos alone. ``eval.rerank_graph`` names the
features it links the photos by:

* ``"imagenet"``: the pooled last feature map of the frozen pretrained backbone the model started from
  (``config.model.backbone`` with ``config.model.pretrained`` weights), at the evaluation's image size; for a
  method that trains on features, those features (``config.features``' extractor). Fine-tuning on the seen
  classes tailors the model's photo embedding to them, while the ImageNet features keep telling apart photos of
  classes nobody trained on.
* ``"embedding"``: the model's own photo embeddings (their views side by side).

Only the float representation is re-ranked; ITQ and learned codes keep their Hamming ranking.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jsbir import metrics
from jsbir.data import features
from jsbir.data.types import Images
from jsbir.eval import frozen

RERANKERS = ("", "diffusion")
GRAPHS = ("imagenet", "embedding")


def check_config(eval_config: Any) -> None:
    """Raises ValueError naming the ``eval`` key whose re-ranking setting is not allowed."""
    if eval_config.rerank not in RERANKERS:
        raise ValueError(f"config.eval.rerank={eval_config.rerank!r} is not one of {RERANKERS}")
    if eval_config.rerank_graph not in GRAPHS:
        raise ValueError(f"config.eval.rerank_graph={eval_config.rerank_graph!r} is not one of {GRAPHS}")
    if eval_config.rerank_k < 1:
        raise ValueError(f"config.eval.rerank_k must be at least 1, got {eval_config.rerank_k}")
    if not 0.0 <= eval_config.rerank_alpha < 1.0:
        raise ValueError(f"config.eval.rerank_alpha must be in [0, 1), got {eval_config.rerank_alpha}")


def _pretrained_backbone(config: Any) -> dict[str, Any]:
    """The extractor section of the pretrained backbone the model started from (``frozen.pretrained_backbone``).

    Raises:
      ValueError: it has no pretrained weights.
    """
    section = frozen.pretrained_backbone(config)
    if section is None:
        where = "features" if "features" in config else "model"
        raise ValueError(
            "config.eval.rerank_graph='imagenet' links photos by the pretrained backbone's features, but "
            f"config.{where}.pretrained is empty: give the model pretrained weights or set "
            "config.eval.rerank_graph='embedding'"
        )
    return section


def graph_features(config: Any, mesh: Any, kind: str, gallery: Images, embeddings: list[np.ndarray]) -> np.ndarray:
    """(N, D) features a ``kind`` graph (``GRAPHS``) links the gallery by; ``embeddings``: the model's gallery
    embedding of each view.

    Raises:
      ValueError: the ImageNet graph of a model with no pretrained weights.
    """
    if kind == "embedding":
        return np.concatenate(embeddings, axis=1)
    backbone = _pretrained_backbone(config)
    if gallery.image.ndim == 2:  # a dataset of pre-extracted backbone features: link the photos by those
        return np.asarray(gallery.image, np.float32)
    extractor = features.make_extractor_of(backbone, config.seed, int(gallery.image.shape[1]))
    return features.extract(extractor, gallery, config.eval.batch_size, mesh, desc="rerank graph")


class Diffusion:
    """The ``eval.rerank="diffusion"`` re-ranker of one run's evaluations.

    One instance serves one gallery (an evaluator's): its ImageNet graph depends on nothing that trains, so it is
    built at the first call and kept; the embedding graph is rebuilt at every call.

    Args:
      config: the run config (``eval``, ``seed``; ``model`` or ``features`` for the ImageNet graph).
      mesh: the device mesh the backbone runs on.

    Raises:
      ValueError: a setting is not allowed, or the ImageNet graph is asked of a model with no pretrained weights.
    """

    def __init__(self, config: Any, mesh: Any):
        check_config(config.eval)
        self.config, self.mesh = config, mesh
        cfg = config.eval
        self.k, self.alpha, self.graph_kind = int(cfg.rerank_k), float(cfg.rerank_alpha), cfg.rerank_graph
        self.backbone = _pretrained_backbone(config)["backbone"] if self.graph_kind == "imagenet" else ""  # checked now
        self._imagenet_graph: metrics.Graph | None = None

    def graph(self, gallery: Images, embeddings: list[np.ndarray]) -> metrics.Graph:
        """The gallery's neighbour graph (``embeddings``: the gallery's embedding of each view)."""
        if self._imagenet_graph is not None:
            return self._imagenet_graph
        graph = metrics.knn_graph(graph_features(self.config, self.mesh, self.graph_kind, gallery, embeddings), self.k)
        if self.graph_kind == "imagenet":
            self._imagenet_graph = graph
        return graph

    def __call__(self, scores: np.ndarray, gallery: Images, embeddings: list[np.ndarray]) -> np.ndarray:
        """(Q, N) re-ranked scores of the (Q, N) float ``scores`` against ``gallery``."""
        return metrics.diffuse(scores, self.graph(gallery, embeddings), self.alpha)

    def describe(self) -> str:
        """One line for the report."""
        if self.graph_kind == "imagenet":
            graph = f"the pretrained {self.backbone}'s pooled features of the gallery"
        else:
            graph = "the model's own gallery embeddings"
        return f"diffusion over the gallery's mutual {self.k}-NN graph of {graph}, alpha {self.alpha}"
