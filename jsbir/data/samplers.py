"""Example samplers by name: which photos a training example pairs with each visited sketch.

The pipeline visits the training sketches epoch by epoch in a seeded permutation; for the sketch at row ``index``
and global stream position ``position`` a sampler picks photo rows, drawing its randomness from the stateless key
``(seed, position)``, so the stream stays a pure function of the position (an exact resume).

``SAMPLERS``:

* ``class_pairs``: ``{"photo"}``, a uniformly drawn photo of the sketch's class (the zero-shot methods).
* ``instance_triplets``: ``{"photo", "negative"}``: the sketch's own photo (same ``instance_id``) and a negative
  photo of another instance; with probability ``HARD_FRACTION`` the negative comes from the sketch's annotated hard
  negatives (``Images.hard_negatives``) when it has any, otherwise it is uniform over the other photos of the
  sketch's class (DSSA's sampling, docs/methods/dssa.md; a class with one photo draws from all photos). Its
  batches also carry ``"photo_row"`` and ``"negative_row"``, the training-photo row of each photo, so that a loss
  can use every photo of the batch as a negative except the sketch's own.
* ``features``: ``class_pairs`` over pre-extracted feature vectors (the methods that train on cached features).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf
from absl import logging

from jsbir.data.types import Images

HARD_FRACTION = 0.75  # DSSA: three in four negatives from the annotated triplets

Pick = Callable[[tf.Tensor, tf.Tensor], dict[str, tf.Tensor]]


def _class_pairs(sketches: Images, photos: Images) -> Pick:
    order = np.argsort(photos.label, kind="stable")
    counts = np.bincount(photos.label, minlength=int(max(sketches.label.max(), photos.label.max())) + 1)
    missing = sorted(set(np.unique(sketches.label).tolist()) - set(np.flatnonzero(counts).tolist()))
    if missing:
        raise ValueError(f"training classes {missing} have sketches but no photos")
    if len(np.unique(sketches.label)) == 1:
        logging.warning(
            "class_pairs sampler on a single training class: every sketch is paired with a random photo of it, so "
            "instance pairs (instance_id) are not used; a fine-grained method samples instance_triplets instead"
        )
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    labels = tf.constant(sketches.label.astype(np.int64))
    order_t, offsets_t, counts_t = (tf.constant(a.astype(np.int64)) for a in (order, offsets, counts))

    def pick(index: tf.Tensor, key: tf.Tensor) -> dict[str, tf.Tensor]:
        label = labels[index]
        u = tf.random.stateless_uniform([], seed=key, maxval=counts_t[label], dtype=tf.int64)
        return {"photo": order_t[offsets_t[label] + u]}

    return pick


def _own_photos(sketches: Images, photos: Images) -> np.ndarray:
    row_of = {int(i): r for r, i in enumerate(photos.instance_id) if i >= 0}
    own = np.array([row_of.get(int(i), -1) if i >= 0 else -1 for i in sketches.instance_id], np.int64)
    if (own < 0).any():
        missing = np.flatnonzero(own < 0)
        raise ValueError(
            f"instance_triplets needs every training sketch's own photo: {len(missing)} of {len(own)} sketches "
            f"(rows {missing[:5].tolist()}) have no photo with their instance_id among the training photos"
        )
    if len(photos) < 2:
        raise ValueError("instance_triplets needs at least two training photos (a positive and a negative)")
    return own


def _hard_rows(sketches: Images, photos: Images, own: np.ndarray) -> np.ndarray:
    """(N, M) photo rows of each sketch's hard negatives (-1 padded); its own photo is never one."""
    if sketches.hard_negatives is None:
        return np.full((len(sketches), 1), -1, np.int64)
    row_of = {int(i): r for r, i in enumerate(photos.instance_id) if i >= 0}
    rows = np.vectorize(lambda i: row_of.get(int(i), -1), otypes=[np.int64])(sketches.hard_negatives)
    rows[rows == own[:, None]] = -1
    rows = -np.sort(-rows, axis=1)  # valid rows first, padding last
    return rows if rows.shape[1] else np.full((len(sketches), 1), -1, np.int64)


def _same_class_rows(photos: Images, own: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each sketch's uniform negatives come from: the photo rows sorted by class, and per sketch the start
    and length of its class's run in them and its own photo's place in that run (the whole set, when the class
    holds only its own photo)."""
    order = np.argsort(photos.label, kind="stable")
    starts = np.searchsorted(photos.label[order], photos.label[own], side="left")
    counts = np.searchsorted(photos.label[order], photos.label[own], side="right") - starts
    alone = counts < 2
    starts[alone], counts[alone] = 0, len(photos)
    place = np.empty(len(photos), np.int64)
    place[order] = np.arange(len(photos))
    return order, np.stack([starts, counts], 1), place[own] - starts


def _instance_triplets(sketches: Images, photos: Images) -> Pick:
    own = _own_photos(sketches, photos)
    hard = _hard_rows(sketches, photos, own)
    order, runs, place = _same_class_rows(photos, own)
    own_t, hard_t, order_t, runs_t, place_t = (tf.constant(a) for a in (own, hard, order, runs, place))
    hard_counts = tf.constant((hard >= 0).sum(axis=1).astype(np.int64))

    def pick(index: tf.Tensor, key: tf.Tensor) -> dict[str, tf.Tensor]:
        keys = tf.random.experimental.stateless_split(key, num=3)
        positive = own_t[index]
        # A uniform photo of the class other than the positive: draw from its n - 1 others, skipping the positive.
        u = tf.random.stateless_uniform([], seed=keys[0], maxval=runs_t[index, 1] - 1, dtype=tf.int64)
        uniform = order_t[runs_t[index, 0] + u + tf.cast(u >= place_t[index], tf.int64)]
        count = hard_counts[index]
        h = tf.random.stateless_uniform([], seed=keys[1], maxval=tf.maximum(count, 1), dtype=tf.int64)
        use_hard = tf.logical_and(count > 0, tf.random.stateless_uniform([], seed=keys[2]) < HARD_FRACTION)
        return {"photo": positive, "negative": tf.where(use_hard, hard_t[index, h], uniform)}

    return pick


@dataclasses.dataclass(frozen=True)
class Sampler:
    """One way of assembling training examples around the visited sketches.

    Attributes:
      name: the registry name.
      photo_keys: the batch keys filled with photos, in the order their augmentation seeds are numbered.
      build: ``(sketches, photos) -> pick``, where ``pick(index, key)`` returns the photo row of each key.
      stored: what the examples must be: "images" ((N, H, W, C) uint8) or "features" ((N, D) vectors).
      rows: whether batches also carry each photo's training-photo row, int32, under ``row_keys``.
    """

    name: str
    photo_keys: tuple[str, ...]
    build: Callable[[Images, Images], Pick]
    stored: str = "images"
    rows: bool = False

    @property
    def row_keys(self) -> tuple[str, ...]:
        """``"<photo key>_row"`` for each photo key when the sampler carries rows, else none."""
        return tuple(f"{key}_row" for key in self.photo_keys) if self.rows else ()


SAMPLERS: dict[str, Sampler] = {
    "class_pairs": Sampler("class_pairs", ("photo",), _class_pairs),
    "instance_triplets": Sampler("instance_triplets", ("photo", "negative"), _instance_triplets, rows=True),
    "features": Sampler("features", ("photo",), _class_pairs, stored="features"),
}


_STORED_NDIM = {"images": 4, "features": 2}


def check_stored(sampler: Sampler, examples: Images, what: str) -> None:
    """Raises a ValueError naming ``what`` when ``examples`` are not what ``sampler`` reads."""
    if examples.image.ndim != _STORED_NDIM[sampler.stored]:
        raise ValueError(
            f"the {sampler.name} sampler reads {sampler.stored}, but the {what} are an array of shape "
            f"{examples.image.shape}"
        )


def get_sampler(name: str) -> Sampler:
    """The sampler registered under ``name``.

    Raises:
      ValueError: naming the unknown sampler and the known ones.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown example sampler {name!r}; known: {sorted(SAMPLERS)}")
    return SAMPLERS[name]
