"""Vector sketches: the numpy-only stroke pickle reader, rasterising, stroke augmentation, and the QMUL-V2 stroke
layout (a generated stroke file, then ../shared/data/qmul_chairs_v2 when it exists)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from configs import common
from jsbir.data import get_dataset, pipeline, records, strokes
from jsbir.data.builders import manual, qmul

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CHAIRS = SHARED / "qmul_chairs_v2"


def _write(path: Path, obj, protocol: int = 3) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# --------------------------------------------------------------------------------------------- the safe reader


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_reads_numpy_arrays(tmp_path, protocol):
    sketch = np.array([[1.5, 2.0, 0], [3.0, 4.0, 1], [5.0, 6.0, 1]])
    path = _write(tmp_path / "S", {"/train/a_1": sketch, "/test/b_2": sketch.astype(np.float32)}, protocol)
    read = strokes.read_stroke_file(path)
    assert list(read) == ["/train/a_1", "/test/b_2"]
    np.testing.assert_array_equal(read["/train/a_1"], sketch)
    assert read["/test/b_2"].dtype == np.float64


class _Payload:
    """Unpickling this would run ``os.system(command)``."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_refuses_other_globals_before_running_them(tmp_path):
    marker = tmp_path / "ran"
    path = _write(tmp_path / "Evil_Coordinate", {"/train/a_1": _Payload(f"touch {marker}")})
    assert b"system" in path.read_bytes()
    with pytest.raises(strokes.UnsafePickleError, match=rf"{path}.*refusing global (posix|os|nt)\.system"):
        strokes.read_stroke_file(path)
    assert not marker.exists()
    evil = pickle.dumps({"/train/a_1": eval}, protocol=3)  # a pickle naming builtins.eval
    path.write_bytes(evil)
    with pytest.raises(strokes.UnsafePickleError, match="builtins.eval"):
        strokes.read_stroke_file(path)


def test_bad_contents_name_the_key(tmp_path):
    with pytest.raises(strokes.StrokeFileError, match="expected a dict"):
        strokes.read_stroke_file(_write(tmp_path / "A", [np.zeros((2, 3))]))
    with pytest.raises(strokes.StrokeFileError, match=r"'/train/x_1'.*\(N, 3\).*\(4, 2\)"):
        strokes.read_stroke_file(_write(tmp_path / "B", {"/train/x_1": np.zeros((4, 2))}))
    with pytest.raises(strokes.StrokeFileError, match="non-finite"):
        strokes.read_stroke_file(_write(tmp_path / "C", {"/train/x_1": np.full((2, 3), np.nan)}))
    (tmp_path / "D").write_bytes(b"not a pickle")
    with pytest.raises(strokes.StrokeFileError, match=str(tmp_path / "D")):
        strokes.read_stroke_file(tmp_path / "D")


# --------------------------------------------------------------------------------------------- rasterising


def test_split_strokes_at_pen_lifts():
    points = np.array([[0, 0, 0], [1, 1, 1], [2, 2, 1], [3, 3, 0], [4, 4, 0]], float)
    parts = strokes.split_strokes(points)
    assert [p.tolist() for p in parts] == [[[0, 0], [1, 1]], [[2, 2]], [[3, 3], [4, 4]]]


def test_rasterise_is_antialiased_at_the_stated_width():
    # A horizontal line at y = 128 on the 256 canvas, 3 px wide: drawn 12 px wide at 4x (rows 506..517), so output
    # rows 127 and 128 are fully covered and rows 126 and 129 half covered (2 of 4 supersampled rows): 255 / 2.
    image = strokes.rasterise([np.array([[32.0, 128.0], [224.0, 128.0]])])
    assert image.shape == (256, 256) and image.dtype == np.uint8
    column = image[:, 128].astype(int)
    assert column[127] == column[128] == 0
    assert abs(column[126] - 127.5) <= 1 and abs(column[129] - 127.5) <= 1
    assert (column[:126] == 255).all() and (column[130:] == 255).all()
    assert (image[:, :30] == 255).all() and image[128, 30] < 255  # the round cap reaches x = 32 - 1.5
    # one point: a dot; at 64 px the point (64, 64) is output (16, 16), a pixel corner: the four pixels around it
    dot = strokes.rasterise([np.array([[64.0, 64.0]])], 64)
    assert (dot[15:17, 15:17] < 255).all() and (dot == 255).sum() == 64 * 64 - 4


# --------------------------------------------------------------------------------------------- augmentation

_THREE = [
    np.array([[20.0, 20.0], [80.0, 20.0]]),
    np.array([[20.0, 120.0], [80.0, 200.0]]),
    np.array([[150.0, 150.0], [230.0, 150.0], [230.0, 230.0]]),
]


def test_drop_rate_zero_and_jitter_zero_leave_the_raster():
    plain = strokes.rasterise(_THREE)
    rng = np.random.default_rng(0)
    kept = strokes.jitter_strokes(strokes.drop_strokes(_THREE, 0.0, rng), 0.0, rng)
    np.testing.assert_array_equal(strokes.rasterise(kept), plain)


def test_dropping_all_but_one_stroke_gives_that_strokes_raster():
    alone = [strokes.rasterise([s]) for s in _THREE]
    chosen = set()
    for seed in range(12):
        image = strokes.rasterise(strokes.drop_strokes(_THREE, 1.0, np.random.default_rng(seed)))
        matches = [i for i, a in enumerate(alone) if np.array_equal(image, a)]
        assert len(matches) == 1
        chosen.add(matches[0])
    assert chosen == {0, 1, 2}  # the kept stroke is drawn uniformly
    # rate 0.5 over many draws keeps about half the strokes
    counts = [len(strokes.drop_strokes(_THREE * 100, 0.5, np.random.default_rng(1)))]
    assert 120 <= counts[0] <= 180
    with pytest.raises(ValueError, match="drop rate"):
        strokes.drop_strokes(_THREE, 1.5, np.random.default_rng(0))


def test_jitter_moves_each_stroke_rigidly():
    moved = strokes.jitter_strokes(_THREE, 4.0, np.random.default_rng(3))
    shifts = [m - s for m, s in zip(moved, _THREE, strict=True)]
    for shift in shifts:
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape))  # one offset per stroke
    np.testing.assert_allclose(np.stack([s[0] for s in shifts]), np.random.default_rng(3).normal(0, 4.0, (3, 2)))
    points = np.array([[20, 20, 0], [80, 20, 1], [20, 120, 0], [80, 200, 1]], float)
    image = strokes.augmented_raster(points, 64, np.random.default_rng(0))
    assert image.shape == (64, 64, 3)
    np.testing.assert_array_equal(image[..., 0], strokes.rasterise(_THREE[:2], 64))


# ------------------------------------------------------------------------------------ the QMUL-V2 stroke layout


def _stroke_set(root: Path) -> dict[str, np.ndarray]:
    """Photos a_b (train), c (train), d (test); sketches with digit and non-digit suffixes."""
    colours = {"a_b": (200, 0, 0), "c": (0, 200, 0), "d": (0, 0, 200)}
    (root / "photo").mkdir(parents=True)
    for stem, colour in colours.items():
        Image.new("RGB", (20, 20), colour).save(root / "photo" / f"{stem}.png")
    line = np.array([[10.0, 10.0, 0], [200.0, 10.0, 1], [10.0, 240.0, 1]])
    sketches = {
        "/train/a_b_1": line,
        "/train/a_b_2": line[:2],
        "/train/c_XYZ": line[1:],
        "/test/d_1": line,
        "/test/d_2": line[::-1],
    }
    _write(root / "ChairV2_Coordinate", sketches)
    return sketches


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ids_images(images):
    return images.instance_id, images.image


def _config(tmp_path, root, size=32):
    config = common.data_config("qmul_v2", size)
    config.root, config.data_dir, config.val_fraction = str(root), str(tmp_path / "tfds"), 0.0
    return config


def test_qmul_v2_stroke_layout(tmp_path):
    sketches = _stroke_set(tmp_path / "chairs")
    config = _config(tmp_path, tmp_path / "chairs")
    data = get_dataset(config)
    assert data.info.class_names == ("chair",) and data.info.split == "official"
    assert [len(x) for x in (data.train_sketches, data.train_photos, data.test_sketches, data.test_photos)] == [
        3, 2, 2, 1,
    ]  # fmt: skip
    photo_colour = {int(i): tuple(im[5, 5]) for i, im in zip(*_ids_images(data.train_photos), strict=True)}
    assert sorted(photo_colour.values()) == [(0, 200, 0), (200, 0, 0)]  # RGB photos
    # sketches pair with their photos: a_b's two, c's one
    ids = sorted(data.train_sketches.instance_id.tolist())
    red = [i for i, c in photo_colour.items() if c == (200, 0, 0)][0]
    assert ids.count(red) == 2 and len(set(ids)) == 2 and set(ids) == set(photo_colour)
    assert set(data.test_sketches.instance_id.tolist()) == set(data.test_photos.instance_id.tolist())
    # file names give back the vector sketch, whose raster is the stored image
    builder = manual.prepare(qmul.QmulV2, config.root, config.data_dir, qmul.make_config(32))
    arrays = records.load_split(builder, "train")
    names = [n.decode() if isinstance(n, bytes) else n for n in arrays["file_name"]]
    sketch_rows = [i for i, n in enumerate(names) if n.startswith("ChairV2_Coordinate/")]
    vectors = qmul.stroke_sketches(config.root, [names[i] for i in sketch_rows])
    images = np.asarray(arrays["image"])
    for row, points in zip(sketch_rows, vectors, strict=True):
        np.testing.assert_array_equal(points, sketches[names[row].removeprefix("ChairV2_Coordinate")])
        np.testing.assert_array_equal(images[row][..., 0], strokes.rasterise(strokes.split_strokes(points), 32))
    with pytest.raises(KeyError, match="/train/zzz_1"):
        qmul.stroke_sketches(config.root, ["ChairV2_Coordinate/train/zzz_1"])


def test_qmul_v2_stroke_layout_errors(tmp_path):
    root = tmp_path / "bad"
    _stroke_set(root)
    _write(root / "ChairV2_Coordinate", {"/train/nophoto_1": np.zeros((2, 3))})
    with pytest.raises(manual.LayoutError, match=r"'/train/nophoto_1' names no photo"):
        get_dataset(_config(tmp_path, root))
    _write(root / "ChairV2_Coordinate", {"/val/a_b_1": np.zeros((2, 3))})
    with pytest.raises(manual.LayoutError, match=r"'/val/a_b_1' is not /train/"):
        get_dataset(_config(tmp_path, root))
    _write(root / "ChairV2_Coordinate", {"/train/c_1": np.zeros((2, 3)), "/test/c_2": np.zeros((2, 3))})
    with pytest.raises(manual.LayoutError, match="'c' has sketches in both"):
        get_dataset(_config(tmp_path, root))
    assert not (tmp_path / "tfds" / "jsbir_qmul_v2").exists() or not any((tmp_path / "tfds").rglob("*.array_record*"))


@pytest.mark.skipif(not CHAIRS.is_dir(), reason=f"{CHAIRS} is absent (no shared data)")
def test_qmul_chairs_v2(tmp_path):
    config = _config(tmp_path, CHAIRS, size=16)
    data = get_dataset(config)
    assert data.info.class_names == ("chair",)
    assert len(data.train_sketches) == 952 and len(np.unique(data.train_sketches.instance_id)) == 300
    assert len(data.test_sketches) == 323 and len(np.unique(data.test_sketches.instance_id)) == 100
    assert len(data.train_photos) == 300 and len(data.test_photos) == 100
    assert not set(data.train_photos.instance_id.tolist()) & set(data.test_photos.instance_id.tolist())
    # validation holds out training pairs (photo with all its sketches), never test ones
    config.val_fraction = 0.2
    held = get_dataset(config)
    assert len(held.val_photos) == 60 and len(held.train_photos) == 240
    val = set(held.val_photos.instance_id.tolist())
    assert set(held.val_sketches.instance_id.tolist()) == val
    assert not val & set(held.train_sketches.instance_id.tolist())
    assert not val & set(held.test_photos.instance_id.tolist())


def test_stroke_augmentation_in_the_training_stream(tmp_path):
    _stroke_set(tmp_path / "chairs")
    config = _config(tmp_path, tmp_path / "chairs")
    config.stroke_drop = 1.0  # every sketch keeps exactly one of its strokes
    data = get_dataset(config)
    images = data.train_sketches.image
    assert isinstance(images, strokes.StrokeImages)
    plain = np.asarray(get_dataset(_config(tmp_path, tmp_path / "chairs")).train_sketches.image)
    np.testing.assert_array_equal(np.asarray(images), plain)  # the plain rasters are the prepared ones
    np.testing.assert_array_equal(np.asarray(images[np.array([2, 0])]), plain[[2, 0]])
    # the three training sketches: [line (2 strokes), line[:2] (1 stroke), line[1:] (2 strokes)] in some order
    reader, plain_reader = pipeline._row_reader(data.train_sketches, True), pipeline._row_reader(data.train_sketches)
    one_stroke = 0
    for row in range(3):
        key = tf.constant([5, 17 + row], tf.int64)
        drawn = reader(tf.constant(row), key).numpy()
        np.testing.assert_array_equal(drawn, images.augmented(row, np.array([5, 17 + row])))  # the key seeds it
        np.testing.assert_array_equal(plain_reader(tf.constant(row), key).numpy(), plain[row])
        one_stroke += int(np.array_equal(drawn, plain[row]))
        assert (drawn >= plain[row]).all() and (drawn < 255).any()  # a subset of the sketch's ink, never blank
    assert one_stroke == 1  # only the one-stroke sketch comes out as it is
    stream = pipeline.train_batches(
        data.train_sketches, data.train_photos, sampler="instance_triplets", global_batch=2, seed=3
    )
    assert next(stream)["sketch"].shape[0] == 2
    pngs = tmp_path / "ShoeV2"  # the PNG layout has no strokes
    for split in ("train", "test"):
        Image.new("RGB", (8, 8)).save(_mkdir(pngs / f"{split}B") / "p.png")
        Image.new("RGB", (8, 8)).save(_mkdir(pngs / f"{split}A") / "p_1.png")
    config.root, config.data_dir = str(pngs), str(tmp_path / "tfds2")
    with pytest.raises(ValueError, match="stroke_drop / stroke_jitter need vector sketches"):
        get_dataset(config)
