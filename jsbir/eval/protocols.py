"""Evaluation protocols by name: which test examples are queries and gallery, and which metrics score a ranking.

``PROTOCOLS``:

* ``zero_shot``: the queries are the test sketches of the unseen classes; the gallery is the test photos of the
  unseen classes (plus the seen-class test photos in generalized mode); an item is relevant when it shares the
  query's class. Every class-level metric variant of ``jsbir.metrics.retrieval_metrics``, and acc@K with the own
  photo's mean and median rank as well when every query's own photo is in the gallery (paired sketches).
* ``fine_grained``: the queries are all test sketches, the gallery all test photos, and each sketch's target is
  the photo with its ``instance_id`` (every sketch must have one). A sketch's own photo competes with the photos of
  its class only (``config.eval.instance_gallery="class"``, DSSA's protocol: the photos of other classes are left out
  of its ranking; the one-class QMUL sets rank the whole gallery either way) or with every gallery photo ("all"):
  acc@K and the target's mean and median rank.

Each protocol also builds its validation sets, the same way, from the held-out validation examples
(``jsbir.data.validation``): held-out seen classes for ``zero_shot``, held-out training instances for
``fine_grained``.
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


def _zero_shot_per_query(scores: np.ndarray, sets: EvalSets, rows: slice, config: Any) -> dict[str, np.ndarray]:
    per = metrics.retrieval_per_query(scores, sets.queries.label[rows], sets.gallery.label, ks=tuple(config.ks))
    if sets.targets is not None:
        per["rank"] = metrics.target_ranks(scores, sets.targets[rows])
    return per


def _zero_shot_summary(per: dict[str, np.ndarray], sets: EvalSets, config: Any) -> dict[str, float]:
    values = metrics.summarise_retrieval(per, sets.queries.label, len(sets.gallery))
    if "rank" in per:
        values.update(metrics.summarise_ranks(per["rank"], ks=tuple(config.acc_ks)))
    return values


def _instance_sets(queries: Images, gallery: Images, what: str) -> EvalSets:
    targets = own_targets(queries.instance_id, gallery.instance_id)
    if targets is None:
        raise ValueError(
            f"{what}: the fine_grained protocol needs every sketch's own photo in the gallery (matching "
            "instance_id), and some have none"
        )
    return _check_nonempty(EvalSets(queries, gallery, targets, instance_level=True), what)


def _fine_grained_sets(data: SbirData) -> EvalSets:
    return _instance_sets(data.test_sketches, data.test_photos, f"dataset {data.info.name!r} (test split)")


def _validation(data: SbirData) -> tuple[Images, Images]:
    if data.val_sketches is None or data.val_photos is None:
        raise ValueError(f"dataset {data.info.name!r} has no validation split: set config.data.val_fraction above 0")
    return data.val_sketches, data.val_photos


def _zero_shot_validation(data: SbirData) -> EvalSets:
    queries, gallery = _validation(data)
    sets = EvalSets(queries, gallery, own_targets(queries.instance_id, gallery.instance_id))
    return _check_nonempty(sets, f"dataset {data.info.name!r} (validation classes)")


def _fine_grained_validation(data: SbirData) -> EvalSets:
    return _instance_sets(*_validation(data), f"dataset {data.info.name!r} (validation instances)")


INSTANCE_GALLERIES = ("class", "all")


def _fine_grained_per_query(scores: np.ndarray, sets: EvalSets, rows: slice, config: Any) -> dict[str, np.ndarray]:
    gallery = config.get("instance_gallery", "class")
    if gallery not in INSTANCE_GALLERIES:
        raise ValueError(f"config.eval.instance_gallery={gallery!r} is not one of {INSTANCE_GALLERIES}")
    if gallery == "class":
        scores = np.where(sets.queries.label[rows, None] == sets.gallery.label[None, :], scores, -np.inf)
    return {"rank": metrics.target_ranks(scores, sets.targets[rows])}


def _fine_grained_summary(per: dict[str, np.ndarray], sets: EvalSets, config: Any) -> dict[str, float]:
    del sets
    return metrics.summarise_ranks(per["rank"], ks=tuple(config.acc_ks))


# Query rows scored at once when config.eval has no query_block (a run configured before it existed): a block of
# 1024 queries against a gallery of 54,151 photos is 222 MB of float32 scores.
DEFAULT_QUERY_BLOCK = 1024


@dataclasses.dataclass(frozen=True)
class Protocol:
    """An evaluation protocol.

    Every metric is a summary of per-query values, and a query's values depend on its own row of scores alone: so
    :meth:`metrics_blocked` scores the queries a block of rows at a time and gives exactly :meth:`metrics` of the
    whole matrix.

    Attributes:
      name: the registry name.
      sets: ``data -> EvalSets``, the test sets.
      validation_sets: ``data -> EvalSets`` from the held-out validation examples.
      per_query: ``(scores, sets, rows, eval_config) -> {name: (len(rows),) array}``, the per-query values of the
        queries ``rows`` (a slice) from their (len(rows), N) scores.
      summary: ``(per_query, sets, eval_config) -> {name: value}`` from every query's values; names are keys of
        ``jsbir.metrics.METRIC_DESCRIPTIONS`` (with K filled in).
      select_metric: the validation metric that chooses checkpoints unless the config names another.
    """

    name: str
    sets: Callable[[SbirData], EvalSets]
    validation_sets: Callable[[SbirData], EvalSets]
    per_query: Callable[[np.ndarray, EvalSets, slice, Any], dict[str, np.ndarray]]
    summary: Callable[[dict[str, np.ndarray], EvalSets, Any], dict[str, float]]
    select_metric: str

    def metrics(self, scores: np.ndarray, sets: EvalSets, eval_config: Any) -> dict[str, float]:
        """Every metric of the protocol from the whole (Q, N) score matrix.

        Args:
          scores: (Q, N) similarities of every query to every gallery item.
          sets: the evaluated sets.
          eval_config: the ``eval`` config section.

        Returns:
          {metric name: value}.
        """
        scores = np.asarray(scores)
        return self.metrics_blocked(lambda rows: scores[rows], sets, eval_config, block=len(sets.queries))

    def metrics_blocked(
        self, score_rows: Callable[[slice], np.ndarray], sets: EvalSets, eval_config: Any, block: int | None = None
    ) -> dict[str, float]:
        """Every metric of the protocol, scoring and ranking the queries a block of rows at a time.

        Memory is bounded by one block's (block, N) scores and their sort, plus a few floats per query.

        Args:
          score_rows: ``rows -> (len(rows), N) scores`` of the queries ``rows`` (a slice) to the whole gallery.
          sets: the evaluated sets.
          eval_config: the ``eval`` config section; ``query_block`` is the block's rows.
          block: rows per block instead of ``eval_config.query_block``.

        Returns:
          {metric name: value}, equal to :meth:`metrics` of the whole matrix.
        """
        total, size = len(sets.queries), len(sets.gallery)
        block = int(block or eval_config.get("query_block", DEFAULT_QUERY_BLOCK))
        if block < 1:
            raise ValueError(f"config.eval.query_block must be at least 1, got {block}")
        parts: list[dict[str, np.ndarray]] = []
        for start in range(0, total, block):
            rows = slice(start, min(total, start + block))
            scores = score_rows(rows)
            if np.shape(scores) != (rows.stop - rows.start, size):
                raise ValueError(
                    f"scores of queries {rows.start}:{rows.stop} have shape {np.shape(scores)}, "
                    f"expected {(rows.stop - rows.start, size)}"
                )
            parts.append(self.per_query(scores, sets, rows, eval_config))
        per = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
        return self.summary(per, sets, eval_config)


PROTOCOLS: dict[str, Protocol] = {
    "zero_shot": Protocol(
        "zero_shot",
        _zero_shot_sets,
        _zero_shot_validation,
        _zero_shot_per_query,
        _zero_shot_summary,
        select_metric="map@all[exact]",
    ),
    "fine_grained": Protocol(
        "fine_grained",
        _fine_grained_sets,
        _fine_grained_validation,
        _fine_grained_per_query,
        _fine_grained_summary,
        select_metric="acc@1",
    ),
}


def get_protocol(name: str) -> Protocol:
    """The protocol registered under ``name``.

    Raises:
      ValueError: naming the unknown protocol and the known ones.
    """
    if name not in PROTOCOLS:
        raise ValueError(f"unknown evaluation protocol {name!r}; known: {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
