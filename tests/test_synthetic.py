"""Tests for the procedural SBIR set (jsbir.data.synthetic) and its tfds builder."""

import itertools
import socket

import numpy as np
import pytest
from PIL import Image, ImageFilter

from jsbir.data import records
from jsbir.data import synthetic as syn

SIZE = 64


def _dark(sketch: np.ndarray) -> np.ndarray:
    return sketch[..., 0] < 128


def _dilate(mask: np.ndarray, pixels: int) -> np.ndarray:
    img = Image.fromarray(mask.astype(np.uint8) * 255)
    return np.asarray(img.filter(ImageFilter.MaxFilter(2 * pixels + 1))) > 0


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([xs.mean(), ys.mean()])


def test_render_is_deterministic_and_depends_on_seed_and_instance():
    c = syn.CLASSES[14]
    for modality in syn.MODALITIES:
        a = syn.render(c, modality, 3, 0, SIZE)
        assert a.shape == (SIZE, SIZE, 3) and a.dtype == np.uint8
        assert a.tobytes() == syn.render(c, modality, 3, 0, SIZE).tobytes()
        assert not np.array_equal(a, syn.render(c, modality, 3, 1, SIZE))
        assert not np.array_equal(a, syn.render(c, modality, 4, 0, SIZE))
    for size in (32, 256):
        assert syn.render(c, "photo", 0, 0, size).shape == (size, size, 3)
    with pytest.raises(ValueError):
        syn.render(c, "painting", 0, 0, SIZE)
    with pytest.raises(ValueError):
        syn.render(c, "photo", 0, 0, 16)


def test_sketch_and_photo_of_an_instance_share_the_pose():
    paired, unpaired, covered, covered_other = [], [], [], []
    for c, k in itertools.product(syn.CLASSES[::3], range(3)):
        sketch = _dark(syn.render(c, "sketch", k, 0, SIZE))
        mask, other = syn.object_mask(c, k, 0, SIZE), syn.object_mask(c, k + 1, 0, SIZE)
        paired.append(np.linalg.norm(_centroid(sketch) - _centroid(mask)))
        unpaired.append(np.linalg.norm(_centroid(sketch) - _centroid(other)))
        # The strokes trace the photo's shapes: nearly all ink lies on or next to the object.
        covered.append(_dilate(mask, 3)[sketch].mean())
        covered_other.append(_dilate(other, 3)[sketch].mean())
    assert min(covered) > 0.9, min(covered)
    assert np.mean(covered_other) < 0.8
    assert np.mean(paired) < 0.1 * SIZE
    assert np.mean(paired) < 0.5 * np.mean(unpaired)


def test_object_mask_marks_the_vivid_shapes_of_the_photo():
    inside, outside = [], []
    for c in syn.CLASSES[::5]:
        mask = syn.object_mask(c, 5, 0, SIZE)
        assert 0.02 < mask.mean() < 0.6
        photo = syn.render(c, "photo", 5, 0, SIZE).astype(np.float32)
        saturation = (photo.max(2) - photo.min(2)) / (photo.max(2) + 1.0)
        core = ~_dilate(~mask, 1)  # away from antialiased edges
        inside.append(saturation[core].mean())
        outside.append(saturation[~_dilate(mask, 1)].mean())
    # Shapes are painted in vivid colours, the background is muted.
    assert min(np.subtract(inside, outside)) > 0.1, (inside, outside)


def test_catalogue_and_zero_shot_split():
    assert len(syn.CLASSES) == 40 and len(set(syn.CLASS_NAMES)) == 40
    assert syn.CLASS_NAMES == tuple(c.name for c in syn.CLASSES)
    assert "star-inside-ring" in syn.CLASS_NAMES
    programs = {(frozenset(c.primitives), c.arrangement) for c in syn.CLASSES}
    assert len(programs) == 40  # no two classes differ only by the order of symmetric primitives
    assert len(syn.UNSEEN_CLASSES) == 10 and set(syn.UNSEEN_CLASSES) <= set(syn.CLASS_NAMES)
    seen = [c for c in syn.CLASSES if c.name not in syn.UNSEEN_CLASSES]
    seen_primitives = {p for c in seen for p in c.primitives}
    seen_arrangements = {c.arrangement for c in seen}
    assert seen_primitives == set(syn.PRIMITIVES) and seen_arrangements == set(syn.ARRANGEMENTS)
    for c in syn.CLASSES:
        if c.name in syn.UNSEEN_CLASSES:
            assert set(c.primitives) <= seen_primitives and c.arrangement in seen_arrangements
            assert len(c.primitives) == (3 if c.arrangement == "row" else 2)


def test_side_information_follows_the_shape_programs():
    side = syn.side_information()
    assert side.shape[0] == 40 and 32 <= side.shape[1] <= 64 and side.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(side, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(side, syn.side_information())
    cos = side @ side.T
    assert cos[~np.eye(40, dtype=bool)].max() < 0.99  # distinct classes, distinct vectors
    sharing, disjoint = [], []
    for i, j in itertools.combinations(range(40), 2):
        common = set(syn.CLASSES[i].primitives) & set(syn.CLASSES[j].primitives)
        (sharing if common else disjoint).append(cos[i, j])
    assert np.mean(sharing) > np.mean(disjoint) + 0.1, (np.mean(sharing), np.mean(disjoint))


def test_sketches_look_like_sketches_and_photos_are_colourful():
    dark, chroma = [], []
    for c, k in itertools.product(syn.CLASSES[::4], range(2)):
        sketch = syn.render(c, "sketch", k, 0, SIZE)
        assert np.array_equal(sketch[..., 0], sketch[..., 1])
        assert np.array_equal(sketch[..., 0], sketch[..., 2])
        assert (sketch > 240).all(axis=2).mean() > 0.85  # mostly white paper
        dark.append(_dark(sketch).mean())
        photo = syn.render(c, "photo", k, 0, SIZE).astype(np.float32)
        assert (photo > 240).all(axis=2).mean() < 0.2
        chroma.append(photo.std(axis=2).mean())  # spread between R, G and B: colour, not grey
    assert 0.003 < min(dark) and max(dark) < 0.15 and 0.01 < np.mean(dark) < 0.08
    assert min(chroma) > 5.0


def test_generate_pairs_modalities_and_separates_splits():
    train = list(syn.generate("train", seed=0, size=32, per_class=2))
    test = list(syn.generate("test", seed=0, size=32, per_class=1))
    assert len(train) == 40 * 2 * 2 and len(test) == 40 * 1 * 2
    for ex in train + test:
        assert syn.CLASS_NAMES[ex["label"]] == ex["class_name"]
        assert ex["instance_id"] // syn.INSTANCE_ID_STRIDE == ex["label"]
    ids = {}
    for ex in train:
        ids.setdefault(ex["instance_id"], []).append(ex["modality"])
    assert all(sorted(m) == ["photo", "sketch"] for m in ids.values())
    assert not ids.keys() & {ex["instance_id"] for ex in test}
    np.testing.assert_array_equal(train[3]["image"], syn.render(syn.CLASSES[0], train[3]["modality"], 1, 0, 32))


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _load(builder, split):
    arrays = records.load_split(builder, split)
    assert isinstance(arrays["image"], records.RecordImages)  # the pixels stay in the records until read
    images = np.asarray(arrays["image"])
    fields = {k: v for k, v in arrays.items() if k != "image"}
    examples = [{**{k: v[i] for k, v in fields.items()}, "image": images[i]} for i in range(len(images))]
    return sorted(examples, key=lambda ex: (int(ex["instance_id"]), int(ex["modality"])))


def test_tfds_builder_prepares_offline_and_is_reproducible(tmp_path, no_network):
    from jsbir.data.builders import synthetic_sbir as sb

    config = sb.make_config(size=32, train_per_class=2, test_per_class=1, seed=0)
    assert config.name == "s32_tr2_te1_seed0"
    assert sb.make_config() is sb.SyntheticSbir.builder_configs["s64_tr100_te40_seed0"]
    builders = [sb.prepare(tmp_path / name, config) for name in ("a", "b")]
    info = builders[0].info
    assert info.features["label"].names == list(syn.CLASS_NAMES)
    assert info.features["modality"].names == ["photo", "sketch"]
    for split, per_class in (("train", 2), ("test", 1)):
        first, second = (_load(b, split) for b in builders)
        assert len(first) == 40 * per_class * 2 == info.splits[split].num_examples
        counts = np.zeros((40, 2), int)
        for ex in first:
            counts[ex["label"], ex["modality"]] += 1
            assert ex["image"].shape == (32, 32, 3)
            assert ex["instance_id"] // syn.INSTANCE_ID_STRIDE == ex["label"]
        assert (counts == per_class).all()
        ids = [int(ex["instance_id"]) for ex in first]
        assert ids[0::2] == ids[1::2]  # every instance: one photo, one sketch
        for a, b in zip(first, second, strict=True):
            assert a["instance_id"] == b["instance_id"] and a["label"] == b["label"]
            np.testing.assert_array_equal(a["image"], b["image"])
        # PNG is lossless: what was stored is exactly what render() draws.
        ex = first[1]
        instance = int(ex["instance_id"]) % syn.INSTANCE_ID_STRIDE
        modality = syn.MODALITIES[ex["modality"]]
        rendered = syn.render(syn.CLASSES[ex["label"]], modality, instance, 0, 32)
        np.testing.assert_array_equal(ex["image"], rendered)
