"""tf.data streams: class-matched sketch/photo training pairs and padded evaluation batches.

Training stream. The sketches of the training classes are visited epoch by epoch, each epoch in a fresh
permutation drawn from ``(seed, epoch)`` (shuffle before repeat); the sketch at global position ``g`` is paired
with a photo of the same class drawn from ``(seed, g)``. Because the stream is a pure function of the position, a
run restarted at step ``s`` starts at position ``s * global_batch`` and sees exactly the batches an uninterrupted
run would have seen. Each process keeps its own rows ``[p * b, (p + 1) * b)`` of every global batch, where
``b = global_batch // process_count``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from jsbir.data import preprocess

_EPOCHS = 1 << 40  # an endless stream; steps, not epochs, end training


@dataclasses.dataclass(frozen=True)
class Images:
    """A set of images in memory with their labels.

    Attributes:
      image: (N, H, W, 3) uint8.
      label: (N,) int32 class index into ``DatasetInfo.class_names``.
      instance_id: (N,) int64; a sketch and the photo it was drawn from share it (-1 when unknown).
    """

    image: np.ndarray
    label: np.ndarray
    instance_id: np.ndarray

    def __len__(self) -> int:
        return len(self.label)

    def select(self, keep: np.ndarray) -> Images:
        """The subset where ``keep`` (bool mask or index array) holds."""
        return Images(self.image[keep], self.label[keep], self.instance_id[keep])


def train_batches(
    sketches: Images,
    photos: Images,
    *,
    global_batch: int,
    seed: int,
    start_step: int = 0,
    augment: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local batches ``{"sketch", "photo", "label"}`` of class-matched pairs.

    Args:
      sketches: the training sketches.
      photos: the training photos; every class of ``sketches`` must have at least one.
      global_batch: rows per step across all processes; each process yields ``global_batch //
        process_count`` of them.
      seed: the stream's seed.
      start_step: the first step to produce (a resumed run passes its restored step).
      augment: whether to flip and translate.
      process_index: this process.
      process_count: the number of processes.

    Returns:
      An iterator of numpy dicts: "sketch" and "photo" float32 (b, H, W, 3) in [-1, 1], "label" int32 (b,).
    """
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} does not split over {process_count} processes")
    local = global_batch // process_count
    order = np.argsort(photos.label, kind="stable")
    counts = np.bincount(
        photos.label, minlength=int(max(sketches.label.max(), photos.label.max())) + 1
    )
    missing = sorted(set(np.unique(sketches.label)) - set(np.flatnonzero(counts)))
    if missing:
        raise ValueError(f"training classes {missing} have sketches but no photos")
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])

    sketch_images = tf.constant(sketches.image)
    sketch_labels = tf.constant(sketches.label.astype(np.int32))
    photo_images = tf.constant(photos.image[order])
    photo_offsets = tf.constant(offsets.astype(np.int64))
    photo_counts = tf.constant(counts.astype(np.int64))
    n = len(sketches)
    start = start_step * global_batch

    def epoch(e):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), e])
        )
        return tf.data.Dataset.from_tensor_slices((perm, e * n + tf.range(n, dtype=tf.int64)))

    def load(index, position):
        label = sketch_labels[index]
        key = tf.stack([tf.cast(seed, tf.int64), position])
        u = tf.random.stateless_uniform([], seed=key, maxval=photo_counts[label], dtype=tf.int64)
        sketch, photo = sketch_images[index], photo_images[photo_offsets[label] + u]
        if augment:
            sketch = preprocess.augment(sketch, key + tf.constant([1, 0], tf.int64))
            photo = preprocess.augment(photo, key + tf.constant([2, 0], tf.int64))
        return {
            "sketch": preprocess.to_float(sketch),
            "photo": preprocess.to_float(photo),
            "label": label,
        }

    ds = tf.data.Dataset.range(start // n, _EPOCHS).flat_map(epoch).skip(start % n)
    # Keep this process's rows of each global batch before any decoding work is done.
    ds = ds.batch(global_batch, drop_remainder=True)
    ds = ds.map(
        lambda i, g: (
            i[process_index * local : (process_index + 1) * local],
            g[process_index * local : (process_index + 1) * local],
        )
    )
    ds = ds.unbatch().map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(local, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    return iter(ds.as_numpy_iterator())


def eval_batches(
    images: Images, batch_size: int, process_index: int = 0, process_count: int = 1
) -> Iterator[dict[str, np.ndarray]]:
    """Host-local batches over ``images`` in order, the last one padded; ``mask`` marks real rows.

    Every process yields the same number of batches; process ``p`` holds rows ``[p * b, (p + 1) * b)`` of each
    global batch of ``batch_size``.

    Returns:
      An iterator of numpy dicts: "image" float32 (b, H, W, 3), "mask" bool (b,).
    """
    local = batch_size // process_count
    for begin in range(0, len(images), batch_size):
        rows = np.arange(begin + process_index * local, begin + (process_index + 1) * local)
        mask = rows < len(images)
        chunk = images.image[np.minimum(rows, len(images) - 1)]
        yield {"image": preprocess.to_float(chunk).numpy(), "mask": mask}
