"""tf.data streams: training examples assembled by a sampler, and padded evaluation batches of test-time views.

Training stream. The sketches of the training classes are visited epoch by epoch, each epoch in a fresh
permutation drawn from ``(seed, epoch)`` (shuffle before repeat); for the sketch at global position ``g`` the
sampler (:mod:`jsbir.data.samplers`) picks its photos with randomness drawn from ``(seed, g)``, and the
preprocessor (:mod:`jsbir.data.preprocess`) augments each image with its own seed derived from the same key.
Because the stream is a pure function of the position, a run restarted at step ``s`` starts at position
``s * global_batch`` and sees exactly the batches an uninterrupted run would have seen. Each process keeps its own
rows ``[p * b, (p + 1) * b)`` of every global batch, where ``b = global_batch // process_count``.

Images that stay in the prepared records (``jsbir.data.records.RecordImages``, every dataset the builders prepare)
are read and decoded per example inside the parallel map, only for this process's rows, so host memory holds the
stream's buffers whatever the dataset's size; arrays already in memory (feature vectors, edge maps) are gathered.
Evaluation batches read only their own rows too. Vector sketches (``jsbir.data.strokes.StrokeImages``, the QMUL-V2
stroke layout with ``config.data.stroke_drop`` or ``stroke_jitter``) are drawn per example inside the map, with stroke
dropout and jitter seeded by the example's key, before the preprocessor's own augmentation.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from jsbir.data import preprocess, records, samplers, strokes
from jsbir.data.types import Images

_EPOCHS = 1 << 40  # an endless stream; steps, not epochs, end training


def example_batch(sampler: str, preprocessing: str, stored_shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """A one-row batch of zeros with the keys, shapes and dtypes of the training stream (to initialise a model).

    Args:
      sampler: a name in ``samplers.SAMPLERS``.
      preprocessing: a name in ``preprocess.PREPROCESSORS``.
      stored_shape: the shape of one stored example (``Images.image.shape[1:]``).
    """
    shape = preprocess.get_preprocessor(preprocessing).output_shape(tuple(stored_shape))
    chosen = samplers.get_sampler(sampler)
    batch = {key: np.zeros((1, *shape), np.float32) for key in ("sketch", *chosen.photo_keys)}
    return {**batch, **{key: np.zeros((1,), np.int32) for key in ("label", *chosen.row_keys)}}


def _row_reader(images: Images, augment: bool = False) -> Callable[[tf.Tensor, tf.Tensor], tf.Tensor]:
    """A tf function from (row index, example key) to that row's stored example: a gather from host memory; for
    images that stay in the prepared records, a read of the row's PNG bytes and a decode inside tf.data (parallel,
    no GIL); for vector sketches (``strokes.StrokeImages``) with ``augment``, the row drawn with stroke dropout and
    jitter seeded by the key (else its plain raster)."""
    if isinstance(images.image, strokes.StrokeImages):
        shape = images.image.shape[1:]
        if augment:
            draw = images.image.augmented
        else:
            plain = images.image

            def draw(row, key):
                return plain[int(row)]

        return lambda row, key: tf.ensure_shape(tf.numpy_function(draw, [row, key], tf.uint8, stateful=False), shape)
    if not isinstance(images.image, records.RecordImages):
        items = tf.constant(images.image)
        return lambda row, key: tf.gather(items, row)
    shape = images.image.shape[1:]

    def read(row, key):
        del key  # stored images read the same whatever the example
        data = tf.numpy_function(images.image.encoded, [row], tf.string, stateful=False)
        return tf.ensure_shape(tf.io.decode_png(data, channels=shape[-1]), shape)

    return read


def train_batches(
    sketches: Images,
    photos: Images,
    *,
    sampler: str = "class_pairs",
    preprocessing: str = "rgb",
    global_batch: int,
    seed: int,
    start_step: int = 0,
    augment: bool = True,
    process_index: int = 0,
    process_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """Endless host-local training batches: ``"sketch"``, the sampler's photo keys, ``"label"``, and the photos' rows
    when the sampler carries them (``Sampler.row_keys``).

    Args:
      sketches: the training sketches.
      photos: the training photos the sampler draws from.
      sampler: a name in ``samplers.SAMPLERS``.
      preprocessing: a name in ``preprocess.PREPROCESSORS``.
      global_batch: rows per step across all processes; each process yields ``global_batch //
        process_count`` of them.
      seed: the stream's seed.
      start_step: the first step to produce (a resumed run passes its restored step).
      augment: whether to augment.
      process_index: this process.
      process_count: the number of processes.

    Returns:
      An iterator of numpy dicts of preprocessed float32 inputs (b, ...), "label" int32 (b,) and the row keys int32
      (b,).
    """
    if global_batch % process_count:
        raise ValueError(f"batch size {global_batch} does not split over {process_count} processes")
    chosen = samplers.get_sampler(sampler)
    samplers.check_stored(chosen, sketches, "training sketches")
    samplers.check_stored(chosen, photos, "training photos")
    prep = preprocess.get_preprocessor(preprocessing)
    local = global_batch // process_count
    pick = chosen.build(sketches, photos)

    sketch_at, photo_at = _row_reader(sketches, augment), _row_reader(photos, augment)
    sketch_labels = tf.constant(sketches.label.astype(np.int32))
    n = len(sketches)
    start = start_step * global_batch

    def epoch(e):
        perm = tf.random.experimental.stateless_shuffle(
            tf.range(n, dtype=tf.int64), seed=tf.stack([tf.cast(seed, tf.int64), e])
        )
        return tf.data.Dataset.from_tensor_slices((perm, e * n + tf.range(n, dtype=tf.int64)))

    def load(index, position):
        key = tf.stack([tf.cast(seed, tf.int64), position])
        example = {"sketch": prep.train(sketch_at(index, key), key + tf.constant([1, 0], tf.int64), augment)}
        for i, (name, row) in enumerate(pick(index, key).items()):
            example[name] = prep.train(photo_at(row, key), key + tf.constant([2 + i, 0], tf.int64), augment)
            if chosen.rows:
                example[f"{name}_row"] = tf.cast(row, tf.int32)
        example["label"] = sketch_labels[index]
        return example

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
    images: Images,
    batch_size: int,
    preprocessing: str = "rgb",
    num_views: int = 1,
    process_index: int = 0,
    process_count: int = 1,
    rgb: bool = False,
) -> Iterator[dict[str, np.ndarray | list[np.ndarray]]]:
    """Host-local batches over ``images`` in order, the last one padded; ``mask`` marks real rows. With ``rgb``,
    the views are the preprocessing's crops and mirror images as RGB in [-1, 1] (``preprocess.rgb_views_like``:
    an ImageNet network's input) instead of the model's own input.

    Every process yields the same number of batches; process ``p`` holds rows ``[p * b, (p + 1) * b)`` of each
    global batch of ``batch_size``.

    Returns:
      An iterator of dicts: "views", a list of ``num_views`` float32 (b, ...) input batches (the first is the
      plain view), and "mask" bool (b,).
    """
    prep = preprocess.get_preprocessor(preprocessing)
    local = batch_size // process_count
    for begin in range(0, len(images), batch_size):
        rows = np.arange(begin + process_index * local, begin + (process_index + 1) * local)
        mask = rows < len(images)
        chunk = np.asarray(images.image[np.minimum(rows, len(images) - 1)])  # reads only these rows
        views = (
            preprocess.rgb_views_like(preprocessing, chunk, num_views)
            if rgb
            else preprocess.view_batches(prep, chunk, num_views)
        )
        yield {"views": views, "mask": mask}
