"""Samplers, preprocessing and example batches: what each training example holds, test-time views, exact resume."""

from __future__ import annotations

import numpy as np
import pytest

from jsbir.data import pipeline, preprocess, samplers
from jsbir.data.types import Images

SIZE = 16


def _images(labels, ids, seed, negatives=None) -> Images:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (len(labels), SIZE, SIZE, 3), dtype=np.uint8)
    # Stamp the row index into a corner so that a test can tell which stored example a batch row came from.
    image[:, 0, 0, 0] = np.arange(len(labels))
    return Images(image, np.asarray(labels, np.int32), np.asarray(ids, np.int64), negatives)


def _row(batch_images: np.ndarray) -> np.ndarray:
    """The stored row of each un-augmented rgb input."""
    return np.rint((batch_images[:, 0, 0, 0] + 1.0) * 127.5).astype(int)


def _stream(sketches, photos, sampler, steps=6, batch=8, **kwargs):
    it = pipeline.train_batches(sketches, photos, sampler=sampler, global_batch=batch, seed=3, augment=False, **kwargs)
    return [next(it) for _ in range(steps)]


def test_class_pairs_match_classes_and_resume_exactly():
    sketches = _images([0, 0, 1, 1, 2, 2, 2, 1], range(8), 0)
    photos = _images([0, 1, 1, 2, 2, 0], range(6), 1)
    full = _stream(sketches, photos, "class_pairs")
    for b in full:
        assert set(b) == {"sketch", "photo", "label"}
        s, p = _row(b["sketch"]), _row(b["photo"])
        np.testing.assert_array_equal(sketches.label[s], b["label"])
        np.testing.assert_array_equal(photos.label[p], b["label"])
    resumed = _stream(sketches, photos, "class_pairs", steps=3, start_step=3)
    for a, b in zip(full[3:], resumed, strict=True):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_class_pairs_need_a_photo_for_every_class():
    with pytest.raises(ValueError, match=r"training classes \[2\] have sketches but no photos"):
        _stream(_images([0, 2], [0, 1], 0), _images([0, 1], [0, 1], 1), "class_pairs")


def test_instance_triplets_pair_own_photo_and_another_instance():
    sketches = _images([0] * 6, [10, 11, 12, 13, 10, 11], 0)
    photos = _images([0] * 4, [13, 12, 11, 10], 1)
    for b in _stream(sketches, photos, "instance_triplets", steps=20):
        assert set(b) == {"sketch", "photo", "negative", "label", "photo_row", "negative_row"}
        s, p, n = _row(b["sketch"]), _row(b["photo"]), _row(b["negative"])
        np.testing.assert_array_equal(photos.instance_id[p], sketches.instance_id[s])
        assert (photos.instance_id[n] != sketches.instance_id[s]).all()
        # The rows the batch carries are the rows its photos came from.
        assert b["photo_row"].dtype == b["negative_row"].dtype == np.int32
        np.testing.assert_array_equal(b["photo_row"], p)
        np.testing.assert_array_equal(b["negative_row"], n)


def test_instance_triplets_draw_three_in_four_negatives_from_the_annotation():
    ids = np.arange(8)
    hard = np.full((8, 2), -1)
    hard[:, 0] = (ids + 1) % 8  # each sketch's one annotated hard negative: the next instance
    sketches = _images([0] * 8, ids, 0, negatives=hard)
    photos = _images([0] * 8, ids, 1)
    picked = []
    for b in _stream(sketches, photos, "instance_triplets", steps=100):
        s, n = _row(b["sketch"]), _row(b["negative"])
        picked += list(photos.instance_id[n] == (sketches.instance_id[s] + 1) % 8)
    # 800 draws: P(hard) = 0.75 + 0.25 / 7 (a uniform draw can hit it too) = 0.786; 4 standard deviations.
    expected = samplers.HARD_FRACTION + (1 - samplers.HARD_FRACTION) / 7
    assert abs(np.mean(picked) - expected) < 4 * np.sqrt(expected * (1 - expected) / len(picked))


def test_instance_triplets_draw_uniform_negatives_from_the_sketch_class():
    # Photos of classes 0 (4 instances), 1 (3) and 2 (its own photo only), rows interleaved by class.
    photo_labels = [1, 0, 2, 0, 1, 0, 0, 1]
    photos = _images(photo_labels, range(8), 1)
    sketches = _images(photo_labels, range(8), 0)
    counts = np.zeros((8, 8))
    for b in _stream(sketches, photos, "instance_triplets", steps=150):
        s, n = _row(b["sketch"]), _row(b["negative"])
        np.add.at(counts, (s, n), 1)
    assert np.trace(counts) == 0  # never the sketch's own photo
    labels = np.array(photo_labels)
    for row in range(8):
        if labels[row] == 2:  # a class with one photo: any other photo
            assert (counts[row, labels == 2] == 0).all() and (counts[row] > 0).sum() >= 5
            continue
        others = np.flatnonzero((labels == labels[row]) & (np.arange(8) != row))
        assert counts[row].sum() == counts[row, others].sum() > 0  # only the class's other photos
        # Uniform over them: each within 4 standard deviations of total / len(others).
        p = 1.0 / len(others)
        total = counts[row].sum()
        assert (abs(counts[row, others] - total * p) < 4 * np.sqrt(total * p * (1 - p))).all()


def test_instance_triplets_name_sketches_without_their_photo():
    with pytest.raises(ValueError, match=r"1 of 2 sketches \(rows \[1\]\) have no photo"):
        _stream(_images([0, 0], [0, 5], 0), _images([0, 0], [0, 1], 1), "instance_triplets")


def test_features_sampler_reads_vectors_and_refuses_images():
    labels = np.array([0, 0, 1, 1], np.int32)
    vectors = Images(np.arange(4 * 5, dtype=np.float32).reshape(4, 5), labels, np.arange(4))
    batches = pipeline.train_batches(
        vectors, vectors, sampler="features", preprocessing="features", global_batch=4, seed=0
    )
    b = next(batches)
    assert b["sketch"].shape == (4, 5) and b["photo"].dtype == np.float32
    np.testing.assert_array_equal(labels[(b["photo"][:, 0] // 5).astype(int)], b["label"])
    with pytest.raises(ValueError, match=r"features sampler reads features, but the training sketches"):
        _stream(_images([0], [0], 0), _images([0], [0], 1), "features")


@pytest.mark.parametrize(
    ("sampler", "preprocessing", "stored", "keys", "shape"),
    [
        ("class_pairs", "rgb", (32, 32, 3), ("sketch", "photo", "label"), (32, 32, 3)),
        (
            "instance_triplets",
            "gray_crop",
            (64, 64, 3),
            ("sketch", "photo", "negative", "label", "photo_row", "negative_row"),
            (56, 56, 1),
        ),
        ("features", "features", (512,), ("sketch", "photo", "label"), (512,)),
    ],
)
def test_example_batch_has_the_stream_keys_and_shapes(sampler, preprocessing, stored, keys, shape):
    batch = pipeline.example_batch(sampler, preprocessing, stored)
    assert tuple(batch) == keys
    images = [k for k in keys if k != "label" and not k.endswith("_row")]
    assert all(batch[k].shape == (1, *shape) and batch[k].dtype == np.float32 for k in images)
    assert all(batch[k].shape == (1,) and batch[k].dtype == np.int32 for k in keys if k not in images)


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match=r"unknown example sampler 'pairs'; known: \['class_pairs'"):
        samplers.get_sampler("pairs")
    with pytest.raises(ValueError, match=r"unknown preprocessing 'grey'"):
        preprocess.get_preprocessor("grey")


def test_rgb_views_are_the_image_and_its_mirror():
    batch = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    plain, mirror = preprocess.view_batches(preprocess.get_preprocessor("rgb"), batch, 2)
    np.testing.assert_allclose(plain, batch / 127.5 - 1, atol=1e-6)
    np.testing.assert_array_equal(mirror, plain[:, :, ::-1])
    with pytest.raises(ValueError, match=r"rgb preprocessing makes 1 to 2 test-time views, not 3"):
        preprocess.view_batches(preprocess.get_preprocessor("rgb"), batch, 3)


def test_gray_crop_views_are_corners_centre_and_mirrors():
    batch = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    prep = preprocess.get_preprocessor("gray_crop")
    views = preprocess.view_batches(prep, batch, 10)
    crop = preprocess.crop_size(64)
    assert crop == 56 and len(views) == 10 and all(v.shape == (2, crop, crop, 1) for v in views)
    gray = (batch.astype(np.float64) @ [0.2989, 0.587, 0.114])[..., None] - preprocess.GRAY_MEAN
    np.testing.assert_allclose(views[0], gray[:, 4:60, 4:60], atol=0.02)  # the centre crop first
    np.testing.assert_allclose(views[1], gray[:, :56, :56], atol=0.02)  # then the top-left corner
    np.testing.assert_allclose(views[4], gray[:, 8:, 8:], atol=0.02)  # ... and the bottom-right one
    for v in range(5):
        np.testing.assert_array_equal(views[5 + v], views[v][:, :, ::-1])
    # Training without augmentation sees exactly the first view.
    import tensorflow as tf

    train = prep.train(tf.constant(batch[0]), tf.constant([0, 0], tf.int64), False).numpy()
    np.testing.assert_allclose(train, views[0][0], atol=1e-4)
