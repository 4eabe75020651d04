"""Image preprocessing in TensorFlow ops, run inside tf.data: scaling and seeded (stateless) augmentation.

Augmentation is stateless (``tf.image.stateless_*`` keyed by the example's global index), so the stream of a
resumed run is bit-identical to the stream of an uninterrupted one.
"""

from __future__ import annotations

import tensorflow as tf


def to_float(image: tf.Tensor) -> tf.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1]."""
    return tf.cast(image, tf.float32) / 127.5 - 1.0


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
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), num=2)
    image = tf.image.stateless_random_flip_left_right(image, seed=seeds[0])
    padded = tf.pad(image, [[pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    return tf.image.stateless_random_crop(padded, tf.shape(image), seed=seeds[1])
