"""Preprocessing by name: how a stored example becomes a model input, in training and at test time.

A :class:`Preprocessor` maps one stored example (uint8 image or feature vector) to the model's input inside
tf.data during training (with seeded augmentation), and a batch of stored examples to one or more test-time
*views* (the evaluator averages scores over them). Augmentation is stateless (``tf.image.stateless_*`` keyed by
the example's global position), so the stream of a resumed run is bit-identical to that of an uninterrupted one.

``PREPROCESSORS``:

* ``rgb``: RGB in [-1, 1]; training flips and translates by up to 1/8 of the side (reflect padding). Views: the
  image, then its mirror image.
* ``gray_crop``: one channel on the 0..255 scale minus the mean pixel ``GRAY_MEAN`` (the DSSA / Sketch-a-Net input,
  docs/methods/dssa.md); training takes a random crop of ``CROP_FRACTION`` of the side and flips. Views: the centre
  crop; with 2, its mirror too; with 5, the four corner crops and the centre; with 10, those five and their mirrors.
* ``features``: pre-extracted float vectors, unchanged (no augmentation); one view.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from jsbir.nn.sketch_a_net import GRAY_MEAN

CROP_FRACTION = 225 / 256  # DSSA crops 225 pixels from 256


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


def _seeds(seed: tf.Tensor, num: int) -> tf.Tensor:
    return tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=num)


def augment(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Random horizontal flip and a random translation of up to 1/8 of the side (reflect padding).

    Args:
      image: (H, W, C) uint8 image.
      seed: shape (2,) int tensor; the same seed gives the same augmentation.

    Returns:
      The augmented (H, W, C) uint8 image.
    """
    size = tf.shape(image)[0]
    pad = tf.maximum(size // 8, 1)
    seeds = _seeds(seed, 2)
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[1])


def crop_size(size: int) -> int:
    """Side of the ``gray_crop`` crops of a ``size``-pixel image."""
    return max(1, round(size * CROP_FRACTION))


def _gray(image: tf.Tensor) -> tf.Tensor:
    """uint8 (..., C) -> float32 (..., 1) on the 0..255 scale minus ``GRAY_MEAN``."""
    image = tf.cast(image, tf.float32)
    if image.shape[-1] == 3:
        image = tf.image.rgb_to_grayscale(image)
    return image - GRAY_MEAN


@dataclasses.dataclass(frozen=True)
class Preprocessor:
    """One way of turning stored examples into model inputs.

    Attributes:
      name: the registry name.
      train: ``(example, seed, augment) -> input``: one stored example (tf tensor) to one model input, with
        seeded augmentation when ``augment``.
      views: ``(batch, num_views) -> [input batch, ...]``: a numpy batch of stored examples to ``num_views``
        float32 numpy batches, the first being the plain (unaugmented) view.
      max_views: how many distinct views ``views`` can make.
      output_shape: the stored example's shape -> the model input's shape.
    """

    name: str
    train: Callable[[tf.Tensor, tf.Tensor, bool], tf.Tensor]
    views: Callable[[np.ndarray, int], list[np.ndarray]]
    max_views: int
    output_shape: Callable[[tuple[int, ...]], tuple[int, ...]]


def _rgb_train(image: tf.Tensor, seed: tf.Tensor, augment_: bool) -> tf.Tensor:
    return to_float(augment(image, seed) if augment_ else image)


def _rgb_views(batch: np.ndarray, num: int) -> list[np.ndarray]:
    plain = to_float(batch).numpy()
    return [plain, plain[:, :, ::-1]][:num]


def _gray_train(image: tf.Tensor, seed: tf.Tensor, augment_: bool) -> tf.Tensor:
    size = int(image.shape[0])
    crop = crop_size(size)
    channels = int(image.shape[-1])
    if not augment_:
        offset = (size - crop) // 2
        return _gray(image[offset : offset + crop, offset : offset + crop])
    seeds = _seeds(seed, 2)
    image = tf.image.stateless_random_crop(image, [crop, crop, channels], seed=seeds[0])
    return _gray(tf.image.stateless_random_flip_left_right(image, seed=seeds[1]))


def _crop_views(images: np.ndarray, num: int) -> list[np.ndarray]:
    """The centre crop, the four corner crops and their mirror images of (B, size, size, C) ``images``, in the
    order 1, 2, 5 or 10 views take them."""
    size = images.shape[1]
    crop, centre = crop_size(size), (size - crop_size(size)) // 2
    far = size - crop
    corners = [(centre, centre), (0, 0), (0, far), (far, 0), (far, far)]
    crops = [images[:, y : y + crop, x : x + crop] for y, x in corners]
    order = {1: crops[:1], 2: [crops[0], crops[0][:, :, ::-1]], 5: crops, 10: crops + [c[:, :, ::-1] for c in crops]}
    if num not in order:
        raise ValueError(f"gray_crop makes 1, 2, 5 or 10 views, not {num}")
    return [np.ascontiguousarray(v) for v in order[num]]


def _gray_views(batch: np.ndarray, num: int) -> list[np.ndarray]:
    return _crop_views(_gray(batch).numpy(), num)


def _gray_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    crop = crop_size(shape[0])
    return (crop, crop, 1)


def _features_train(features: tf.Tensor, seed: tf.Tensor, augment_: bool) -> tf.Tensor:
    del seed, augment_  # vectors are not augmented
    return tf.cast(features, tf.float32)


def _features_views(batch: np.ndarray, num: int) -> list[np.ndarray]:
    return [np.asarray(batch, np.float32)][:num]


PREPROCESSORS: dict[str, Preprocessor] = {
    "rgb": Preprocessor("rgb", _rgb_train, _rgb_views, 2, lambda shape: (*shape[:2], 3)),
    "gray_crop": Preprocessor("gray_crop", _gray_train, _gray_views, 10, _gray_shape),
    "features": Preprocessor("features", _features_train, _features_views, 1, tuple),
}


def rgb_views_like(preprocessing: str, batch: np.ndarray, num_views: int) -> list[np.ndarray]:
    """The ``num_views`` test-time views a ``preprocessing`` makes of a numpy batch of stored images, as RGB in
    [-1, 1] (an ImageNet network's input): the same crops and mirror images, without that preprocessing's own
    conversion (``gray_crop``'s grey level and mean). Feature vectors are returned as they are (one view).

    Raises:
      ValueError: an unknown preprocessing, or more views than it makes.
    """
    prep = get_preprocessor(preprocessing)
    if not 1 <= num_views <= prep.max_views:
        raise ValueError(f"{prep.name} preprocessing makes 1 to {prep.max_views} test-time views, not {num_views}")
    if prep.name == "features":
        return [np.asarray(batch, np.float32)]
    if prep.name == "gray_crop":
        return _crop_views(to_float(batch).numpy(), num_views)
    return _rgb_views(batch, num_views)


def get_preprocessor(name: str) -> Preprocessor:
    """The preprocessor registered under ``name``.

    Raises:
      ValueError: naming the unknown preprocessor and the known ones.
    """
    if name not in PREPROCESSORS:
        raise ValueError(f"unknown preprocessing {name!r}; known: {sorted(PREPROCESSORS)}")
    return PREPROCESSORS[name]


def view_batches(preprocessor: Preprocessor, batch: np.ndarray, num_views: int) -> list[np.ndarray]:
    """``num_views`` test-time views of a numpy batch of stored examples.

    Raises:
      ValueError: ``num_views`` is more than the preprocessor makes, or below 1.
    """
    if not 1 <= num_views <= preprocessor.max_views:
        raise ValueError(
            f"{preprocessor.name} preprocessing makes 1 to {preprocessor.max_views} test-time views, not {num_views}"
        )
    return preprocessor.views(batch, num_views)
