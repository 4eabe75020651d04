"""Images stay in the prepared records: loading reads no pixel, rows are read on demand, and the streamed training
and evaluation batches equal those made from the same images held in memory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from configs import common
from jsbir.data import get_dataset, pipeline, records
from jsbir.data.builders import synthetic_sbir
from jsbir.data.types import Images

SIZE = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    config = common.data_config("synthetic", SIZE)
    config.data_dir = str(tmp_path_factory.mktemp("tfds"))
    config.train_per_class, config.test_per_class = 3, 2
    return get_dataset(config)


@pytest.fixture
def decoded(monkeypatch):
    """Counts the PNG rows decoded on the host."""
    calls = []
    decode = records._decode_png
    monkeypatch.setattr(records, "_decode_png", lambda data: calls.append(1) or decode(data))
    return calls


def _in_memory(images: Images) -> Images:
    return dataclasses.replace(images, image=np.asarray(images.image))


def test_loading_reads_no_pixel_and_a_selection_reads_only_its_rows(data, decoded, tmp_path):
    sets = [data.train_sketches, data.train_photos, data.val_sketches, data.val_photos]
    sets += [data.test_sketches, data.test_photos]
    assert all(isinstance(s.image, records.RecordImages) for s in sets)
    config = common.data_config("synthetic", SIZE)
    config.data_dir, config.train_per_class, config.test_per_class = str(tmp_path), 3, 2
    again = get_dataset(config)  # prepares its own records, then loads them
    assert not decoded  # loading and dividing touched no pixel
    photos = again.test_photos.image
    assert photos.shape == (len(again.test_photos), SIZE, SIZE, 3) and photos.ndim == 4 and photos.dtype == np.uint8
    everything = np.asarray(photos)
    assert len(decoded) == len(photos)
    picked = photos[np.array([5, 0, 5])]
    assert isinstance(picked, records.RecordImages) and len(decoded) == len(photos)  # selecting reads nothing
    np.testing.assert_array_equal(np.asarray(picked), everything[[5, 0, 5]])
    np.testing.assert_array_equal(photos[3], everything[3])
    np.testing.assert_array_equal(photos[2:7:2, 4, :, 1], everything[2:7:2, 4, :, 1])
    np.testing.assert_array_equal(np.asarray(photos[photos.shape[0] - 1 :], np.float32), everything[-1:])
    assert len(decoded) == len(photos) + 3 + 1 + 3 + 1
    # The same rows of the same records have one name; other rows another.
    assert (
        photos[[1, 2]].fingerprint()
        == photos[np.array([False, True, True] + [False] * (len(photos) - 3))].fingerprint()
    )
    assert photos[[1, 2]].fingerprint() != photos[[2, 1]].fingerprint()
    # Another preparation of the same content is other records: its cache entries are its own.
    assert data.test_photos.image.fingerprint() != photos.fingerprint()


def test_streamed_training_batches_equal_batches_from_memory(data):
    sketches, photos = data.training_pairs()
    kwargs = dict(sampler="class_pairs", preprocessing="rgb", global_batch=8, seed=5, augment=True)
    streamed = pipeline.train_batches(sketches, photos, **kwargs, start_step=2)
    held = pipeline.train_batches(_in_memory(sketches), _in_memory(photos), **kwargs, start_step=2)
    for _ in range(4):
        a, b = next(streamed), next(held)
        assert a.keys() == b.keys() == {"sketch", "photo", "label"}
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])


def test_streamed_evaluation_batches_equal_batches_from_memory(data):
    images = data.test_sketches
    streamed = list(pipeline.eval_batches(images, 7, num_views=2, process_index=1, process_count=1))
    held = list(pipeline.eval_batches(_in_memory(images), 7, num_views=2, process_index=1, process_count=1))
    assert len(streamed) == len(held) == -(-len(images) // 7)
    for a, b in zip(streamed, held, strict=True):
        np.testing.assert_array_equal(a["mask"], b["mask"])
        for x, y in zip(a["views"], b["views"], strict=True):
            np.testing.assert_array_equal(x, y)


def test_records_of_a_format_without_random_access_are_refused_naming_the_folder(tmp_path):
    builder = synthetic_sbir.SyntheticSbir(
        config=synthetic_sbir.make_config(size=32, train_per_class=1, test_per_class=1, seed=0),
        data_dir=str(tmp_path),
        file_format="tfrecord",
    )
    builder.download_and_prepare(download_config=synthetic_sbir.OFFLINE)
    with pytest.raises(ValueError, match=rf"{tmp_path}/synthetic_sbir/.*tfrecord.*delete it to rebuild"):
        records.load_split(builder, "train")
