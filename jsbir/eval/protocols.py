"""Evaluation protocols by name: which test examples are queries and gallery, and which metrics score a ranking.

``PROTOCOLS``:

* ``zero_shot``: the queries are the test sketches of the unseen classes; the gallery is the test photos of the
  unseen classes (plus the seen-class test photos in generalized mode); an item is relevant when it shares the
  query's class. Every class-level metric variant of ``jsbir.metrics.retrieval_metrics``, and acc@K with the own
  photo's mean and median rank as well when every query's own photo is in the gallery (paired sketches).
* ``fine_grained``: the queries are all test sketches, the gallery all test photos, and each sketch's target is
  the photo with its ``instance_id`` (every sketch must have one): acc@K and the target's mean and median rank.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from jsbir import metrics
from jsbir.data.types import Images, SbirData


@dataclasses.dataclass(frozen=True)
class EvalSets:
    """The examples one evaluation ranks.

    Attributes:
      queries: the query sketches.
      gallery: the gallery photos.
      targets: (Q,) gallery index of each query's own photo, or None when some query has none there.
      instance_level: relevance is the query's own photo only (else: any photo of the query's class).
    """

    queries: Images
    gallery: Images
    targets: np.ndarray | None
    instance_level: bool = False

    def relevant(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), N) bool relevance of the gallery to the queries ``rows``."""
        if self.instance_level:
            return np.arange(len(self.gallery))[None, :] == self.targets[rows, None]
        return self.queries.label[rows, None] == self.gallery.label[None, :]


def own_targets(query_ids: np.ndarray, gallery_ids: np.ndarray) -> np.ndarray | None:
    """Gallery index of each query's own photo (same ``instance_id``), or None when some query's is absent."""
    index = {int(i): n for n, i in enumerate(gallery_ids) if i >= 0}
    target = np.array([index.get(int(i), -1) if i >= 0 else -1 for i in query_ids], np.int64)
    return None if (target < 0).any() else target


def _check_nonempty(sets: EvalSets, what: str) -> EvalSets:
    if not len(sets.queries) or not len(sets.gallery):
        raise ValueError(f"{what} has {len(sets.queries)} query sketches and {len(sets.gallery)} gallery photos")
    return sets


def _zero_shot_sets(data: SbirData) -> EvalSets:
    info = data.info
    unseen = np.asarray(info.unseen)
    queries = data.test_sketches.select(np.isin(data.test_sketches.label, unseen))
    gallery = data.test_photos if info.generalized else data.test_photos.select(np.isin(data.test_photos.label, unseen))
    sets = EvalSets(queries, gallery, own_targets(queries.instance_id, gallery.instance_id))
    return _check_nonempty(sets, f"dataset {info.name!r} split {info.split!r} (unseen classes)")


def _zero_shot_metrics(scores: np.ndarray, sets: EvalSets, config: Any) -> dict[str, float]:
    values = metrics.retrieval_metrics(scores, sets.queries.label, sets.gallery.label, ks=tuple(config.ks))
    if sets.targets is not None:
        values.update(metrics.fine_grained_metrics(scores, sets.targets, ks=tuple(config.acc_ks)))
    return values


def _fine_grained_sets(data: SbirData) -> EvalSets:
    queries, gallery = data.test_sketches, data.test_photos
    targets = own_targets(queries.instance_id, gallery.instance_id)
    if targets is None:
        raise ValueError(
            f"dataset {data.info.name!r}: the fine_grained protocol needs every test sketch's own photo in the "
            "test photos (matching instance_id), and some have none"
        )
    sets = EvalSets(queries, gallery, targets, instance_level=True)
    return _check_nonempty(sets, f"dataset {data.info.name!r} (test split)")


def _fine_grained_metrics(scores: np.ndarray, sets: EvalSets, config: Any) -> dict[str, float]:
    return metrics.fine_grained_metrics(scores, sets.targets, ks=tuple(config.acc_ks))


@dataclasses.dataclass(frozen=True)
class Protocol:
    """An evaluation protocol.

    Attributes:
      name: the registry name.
      sets: ``data -> EvalSets``.
      metrics: ``(scores, sets, eval_config) -> {name: value}``; names are keys of
        ``jsbir.metrics.METRIC_DESCRIPTIONS`` (with K filled in).
    """

    name: str
    sets: Callable[[SbirData], EvalSets]
    metrics: Callable[[np.ndarray, EvalSets, Any], dict[str, float]]


PROTOCOLS: dict[str, Protocol] = {
    "zero_shot": Protocol("zero_shot", _zero_shot_sets, _zero_shot_metrics),
    "fine_grained": Protocol("fine_grained", _fine_grained_sets, _fine_grained_metrics),
}


def get_protocol(name: str) -> Protocol:
    """The protocol registered under ``name``.

    Raises:
      ValueError: naming the unknown protocol and the known ones.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
