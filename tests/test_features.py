"""Feature extraction and its cache (a new entry whenever the backbone, its weights, the image size, the
preprocessing or the images change; an interrupted or damaged entry rebuilt, never read), and the feature files
users bring (.npy and .mat round trips, and files refused with a message naming them)."""

from __future__ import annotations

import os

import ml_collections
import numpy as np
import pytest

from jsbir import sharding
from jsbir.data import feature_files, features, get_dataset
from jsbir.data.types import Images

SIZE = 32


def _config(tmp_path, **features_overrides) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict(
        {
            "seed": 0,
            "data": {"data_dir": str(tmp_path / "tfds")},
            "features": {
                "backbone": "compact_cnn",
                "backbone_args": {"width": 8, "stages": 1},
                "pretrained": "",
                "batch_size": 8,
                "cache_dir": str(tmp_path / "cache"),
                "input_size": 0,
            },
        }
    )
    for key, value in features_overrides.items():
        config.features[key] = value
    return config


def _images(n: int = 12, size: int = SIZE, seed: int = 0) -> Images:
    rng = np.random.default_rng(seed)
    return Images(
        rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        np.arange(n, dtype=np.int32) % 3,
        np.full(n, -1, np.int64),
    )


@pytest.fixture(scope="module")
def mesh():
    return sharding.make_mesh()


def _entries(config) -> list[str]:
    return sorted(os.listdir(config.features.cache_dir))


def test_extraction_is_cached_and_served_bit_for_bit(tmp_path, mesh):
    config, images = _config(tmp_path), _images()
    extractor = features.make_extractor(config, SIZE)
    first, hit = features.cached_features(extractor, images, config, mesh, "train_sketches")
    assert not hit and first.shape == (12, 16) and first.dtype == np.float32
    again, hit = features.cached_features(extractor, images, config, mesh, "train_sketches")
    assert hit
    np.testing.assert_array_equal(again, first)
    # The same features as a direct, uncached extraction; rows in order.
    np.testing.assert_allclose(features.extract(extractor, images, 8, mesh), first, rtol=1e-6)
    alone = features.extract(extractor, images.select(np.array([5])), 8, mesh)
    np.testing.assert_allclose(alone[0], first[5], rtol=1e-5, atol=1e-6)


def test_every_input_of_the_features_makes_a_new_entry(tmp_path, mesh, monkeypatch):
    images = _images()
    base = _config(tmp_path)

    def key(config, size=SIZE):
        return features.make_extractor(config, size).key

    keys = {
        "base": key(base),
        "backbone args": key(_config(tmp_path, backbone_args={"width": 16, "stages": 1})),
        "weights": key(ml_collections.ConfigDict({**base.to_dict(), "seed": 1})),
        "image size": key(base, 48),
        "input size": key(_config(tmp_path, input_size=64)),
    }
    monkeypatch.setattr(features, "PREPROCESSING", features.PREPROCESSING + ", resized")
    keys["preprocessing"] = key(base)
    monkeypatch.undo()
    assert len(set(keys.values())) == len(keys), keys
    assert key(base) == keys["base"]  # and the same inputs give the same key

    content = features.content_key(images)
    edited = Images(images.image.copy(), images.label, images.instance_id)
    edited.image[3, 0, 0, 0] ^= 1
    changed = {
        "one pixel": features.content_key(edited),
        "a file removed": features.content_key(images.select(np.arange(11))),
        "order": features.content_key(images.select(np.r_[1, 0, 2:12])),
        "a label": features.content_key(Images(images.image, images.label[::-1].copy(), images.instance_id)),
    }
    assert content not in changed.values() and len(set(changed.values())) == len(changed)

    extractor = features.make_extractor(base, SIZE)
    features.cached_features(extractor, images, base, mesh, "a")
    _, hit = features.cached_features(extractor, edited, base, mesh, "a")
    assert not hit and len(_entries(base)) == 2


def test_an_interrupted_write_is_never_read_and_is_rebuilt(tmp_path, mesh, monkeypatch):
    config, images = _config(tmp_path), _images()
    extractor = features.make_extractor(config, SIZE)
    real_save = np.save

    def killed(path, array, *args, **kwargs):
        if str(path).endswith("labels.npy"):
            raise KeyboardInterrupt  # the process dies between the two files
        return real_save(path, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        features.cached_features(extractor, images, config, mesh, "a")
    monkeypatch.undo()
    (left,) = _entries(config)
    assert left.startswith("incomplete.")  # no complete-looking entry
    os.rename(
        os.path.join(config.features.cache_dir, left),
        os.path.join(config.features.cache_dir, left.rsplit(".", 1)[0] + ".999999999"),
    )  # as if left by a process that is gone
    out, hit = features.cached_features(extractor, images, config, mesh, "a")
    assert not hit
    (entry,) = _entries(config)  # rebuilt, and the stale temporary folder removed
    assert not entry.startswith("incomplete.")
    np.testing.assert_array_equal(np.load(os.path.join(config.features.cache_dir, entry, "features.npy")), out)


def test_a_damaged_entry_is_rebuilt_with_a_warning(tmp_path, mesh, caplog):
    config, images = _config(tmp_path), _images()
    extractor = features.make_extractor(config, SIZE)
    first, _ = features.cached_features(extractor, images, config, mesh, "a")
    (entry,) = _entries(config)
    path = os.path.join(config.features.cache_dir, entry, "features.npy")
    np.save(path, np.zeros_like(first))
    again, hit = features.cached_features(extractor, images, config, mesh, "a")
    assert not hit and "is damaged (features.npy differs from its SHA-256 record)" in caplog.text
    np.testing.assert_array_equal(again, first)
    _, hit = features.cached_features(extractor, images, config, mesh, "a")
    assert hit


def test_no_features_section_is_refused(tmp_path, mesh):
    config = ml_collections.ConfigDict({"seed": 0})
    with pytest.raises(ValueError, match="has no 'features' section"):
        features.with_features(None, config, mesh)


@pytest.mark.parametrize("suffix", [".npy", ".mat"])
def test_feature_files_round_trip(tmp_path, suffix):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 5)).astype(np.float32), np.array([0, 2, 1, 1, 0, 2, 2])
    path = tmp_path / f"sketch{suffix}"
    feature_files.save_features(path, x, y)
    got_x, got_y = feature_files.load_features(path, num_classes=3, dim=5)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)
    assert got_x.dtype == np.float32 and got_y.dtype == np.int32


def test_bad_feature_files_are_refused_naming_the_file(tmp_path):
    x = np.zeros((4, 3), np.float32)
    mat = tmp_path / "photo.mat"
    import scipy.io

    scipy.io.savemat(mat, {"features": x, "labels": np.zeros((3, 1))})
    with pytest.raises(ValueError, match=rf"{mat}: 3 labels .* for 4 feature rows"):
        feature_files.load_features(mat)
    npy = tmp_path / "sketch.npy"
    feature_files.save_features(npy, x, [0, 1, 0, 1])
    with pytest.raises(ValueError, match=rf"{npy}: features are 3-d but config.data.feature_dim is 8"):
        feature_files.load_features(npy, dim=8)
    with pytest.raises(ValueError, match=rf"{npy}: labels span 0..1 but there are 1 classes"):
        feature_files.load_features(npy, num_classes=1)
    np.save(tmp_path / "sketch_labels.npy", np.array([{"a": 1}] * 4, dtype=object))
    with pytest.raises(ValueError, match=rf"cannot read {npy} or sketch_labels.npy as plain arrays"):
        feature_files.load_features(npy)
    os.remove(tmp_path / "sketch_labels.npy")
    with pytest.raises(FileNotFoundError, match=r"sketch.npy has no labels file sketch_labels.npy"):
        feature_files.load_features(npy)
    scipy.io.savemat(mat, {"feats": x})
    with pytest.raises(ValueError, match=rf"{mat} has no 'features' and no 'labels' variable"):
        feature_files.load_features(mat)
    (tmp_path / "broken.mat").write_bytes(b"not a mat file")
    with pytest.raises(ValueError, match=r"cannot read .*broken.mat"):
        feature_files.load_features(tmp_path / "broken.mat")


def test_features_dataset_from_a_folder(tmp_path):
    rng = np.random.default_rng(0)
    names = ["cat", "dog", "car", "tree", "house"]
    (tmp_path / "classes.txt").write_text("\n".join(names) + "\n")
    labels = np.repeat(np.arange(5), 6)
    feature_files.save_features(tmp_path / "sketch.npy", rng.normal(size=(30, 4)), labels)
    feature_files.save_features(tmp_path / "photo.mat", rng.normal(size=(30, 4)), labels)
    config = ml_collections.ConfigDict(
        {
            "name": "features",
            "root": str(tmp_path),
            "split": "random1_seed0",
            "test_fraction": 0.2,
            "data_seed": 0,
            "val_fraction": 0.0,
            "semantics": "glove",
            "semantics_file": "",
            "generalized": False,
            "graph": "mst",
            "graph_k": 5,
            "semantics_setting": "inductive",
            "feature_dim": 4,
        }
    )
    data = get_dataset(config)
    (unseen,) = data.info.unseen
    assert data.info.class_names == tuple(names) and unseen not in data.info.seen
    assert data.info.semantics.shape == (5, 50)
    assert not np.isin(unseen, data.train_sketches.label) and not np.isin(unseen, data.train_photos.label)
    assert (data.test_sketches.label == unseen).sum() == 6 and data.train_sketches.image.shape[1:] == (4,)
    assert len(data.train_sketches) + len(data.test_sketches) == 30
    config.feature_dim = 8
    with pytest.raises(ValueError, match=r"sketch.npy: features are 4-d but config.data.feature_dim is 8"):
        get_dataset(config)
    config.feature_dim = 0
    feature_files.save_features(tmp_path / "sketch.mat", rng.normal(size=(30, 4)), labels)
    with pytest.raises(FileNotFoundError, match=r"holds both of sketch.npy and sketch.mat"):
        get_dataset(config)
