"""Real-dataset builders and loaders on tiny fixtures written into tmp_path, one per layout, plus bad input.

Every image of a fixture is a solid colour that encodes (class, index, modality), so a test can tell after
resizing exactly which file an example came from. The last tests read ../shared/data when it exists.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from configs import common
from jsbir.data import get_dataset
from jsbir.data.builders import manual, qmul, quickdraw_raw
from jsbir.data.types import PHOTO, SKETCH
from jsbir.eval.protocols import get_protocol

SIZE = 32
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _image(path: Path, colour: tuple[int, int, int], shape=(12, 10), mode="RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", shape[::-1], colour)
    (image.convert(mode) if mode != "RGB" else image).save(path)


def _config(tmp_path: Path, name: str, root: Path | str, **kwargs):
    config = common.data_config(name, SIZE)
    config.root = str(root)
    config.data_dir = str(tmp_path / "tfds")
    config.val_fraction = 0.0  # these tests check loading and the zero-shot division (test_validation: the rest)
    config.update(kwargs)
    return config


def _colour(label: int, index: int, modality: int) -> tuple[int, int, int]:
    return (40 * label + 10, 30 * index + 5, 200 * modality + 20)


def _sketchy_tree(root: Path, sketch_dir: str, photo_dir: str, classes=("bat", "cat", "dog"), photos=3) -> None:
    """Photo ``n0000000{c}_{i}.jpg``/png and sketches ``..._{i}-1.png``, ``..._{i}-2.png``; one unpaired sketch."""
    for c, name in enumerate(classes):
        for i in range(photos):
            stem = f"n0000000{c}_{i}"
            _image(root / photo_dir / name / f"{stem}.png", _colour(c, i, PHOTO))
            for k in (1, 2):
                _image(root / sketch_dir / name / f"{stem}-{k}.png", _colour(c, i, SKETCH))
        _image(root / sketch_dir / name / "n99999999_0-1.png", _colour(c, 7, SKETCH))


def _evaluation_sets(data, protocol="zero_shot"):
    sets = get_protocol(protocol).sets(data)
    return sets.queries, sets.gallery


def _all(data):
    return [data.train_sketches, data.train_photos, data.test_sketches, data.test_photos]


def _check_pairs(data, classes: int, photos: int) -> None:
    sketches = (data.train_sketches, data.test_sketches)
    for split_s, split_p in ((data.train_sketches, data.train_photos), (data.test_sketches, data.test_photos)):
        ids = {int(i): n for n, i in enumerate(split_p.instance_id)}
        for image, label, instance in zip(split_s.image, split_s.label, split_s.instance_id, strict=True):
            if instance < 0:
                assert image[0, 0, 1] == 7 * 30 + 5  # only the sketch of the absent photo n99999999_0
                continue
            photo = ids[int(instance)]  # a pair never straddles train and test
            assert split_p.label[photo] == label
            assert split_p.image[photo][0, 0, 1] == image[0, 0, 1]  # same photo index i
    assert sum(len(s) for s in sketches) == classes * (2 * photos + 1)


@pytest.mark.parametrize(
    "sketch_dir,photo_dir",
    [("sketch/tx_000000000000", "extended_photo"), ("sketch/tx_000000000000", "photo/tx_000000000000"),
     ("sketch", "photo")],
)  # fmt: skip
def test_sketchy_layouts(tmp_path, sketch_dir, photo_dir):
    root = tmp_path / "Sketchy"
    _sketchy_tree(root, sketch_dir, photo_dir)
    split = tmp_path / "mine.txt"
    split.write_text("# my split\ncat\n")
    data = get_dataset(_config(tmp_path, "sketchy", root, split=str(split), semantics="word2vec",
                               semantics_file=str(_w2v(tmp_path, ("bat", "cat", "dog")))))  # fmt: skip
    info = data.info
    assert info.name == "sketchy" and info.split == str(split) and info.class_names == ("bat", "cat", "dog")
    assert info.unseen == (1,) and info.seen == (0, 2) and info.semantics.shape == (3, 4)
    for images in _all(data):
        assert images.image.shape[1:] == (SIZE, SIZE, 3) and images.image.dtype == np.uint8
    photos = np.concatenate([data.train_photos.image, data.test_photos.image])
    labels = np.concatenate([data.train_photos.label, data.test_photos.label])
    np.testing.assert_array_equal(photos[:, 5, 5, 0], 40 * labels + 10)  # label follows the class folder
    assert (photos[:, :, :, 2] == 20).all()  # photo colour
    sketches = np.concatenate([data.train_sketches.image, data.test_sketches.image])
    assert (sketches[..., 2] == 220).all() and len(sketches) == 3 * 7
    _check_pairs(data, classes=3, photos=3)
    # The unseen class lies entirely in test: 3 photos and 7 sketches.
    queries, gallery = _evaluation_sets(data)
    assert len(queries) == 7 and len(gallery) == 3 and set(queries.label) == {1}


def test_sketchy_pairs_keep_drawn_photos_divided_by_photo(tmp_path):
    root = tmp_path / "Sketchy"
    _sketchy_tree(root, "sketch", "photo", classes=("apple", "bread", "chair", "dog", "eagle"), photos=5)
    _image(root / "photo" / "apple" / "n55555555_0.png", (1, 2, 3))  # a photo nobody drew: left out
    data = get_dataset(_config(tmp_path, "sketchy_pairs", root, val_fraction=0.2))
    info = data.info
    assert info.split == "pairs" and info.seen == info.unseen == tuple(range(5)) and info.validation == ()
    # Per class 5 drawn photos: round(0.2 * 5) = 1 to test; of the 20 training photos 4 are held out to validate.
    assert len(data.test_photos) == 5 and len(data.train_photos) == 16 and len(data.val_photos) == 4
    assert len(data.test_sketches) == 10 and len(data.train_sketches) == 32 and len(data.val_sketches) == 8
    for sketches, photos in ((data.train_sketches, data.train_photos), (data.test_sketches, data.test_photos),
                             (data.val_sketches, data.val_photos)):  # fmt: skip
        assert sorted(set(sketches.instance_id.tolist())) == sorted(photos.instance_id.tolist())
    queries, gallery = _evaluation_sets(data, "fine_grained")
    assert len(queries) == 10 and len(gallery) == 5 and set(gallery.label) == set(range(5))


def _w2v(tmp_path: Path, names) -> Path:
    path = tmp_path / "vectors.npy"
    np.save(path, np.arange(4 * len(names), dtype=np.float32).reshape(len(names), 4))
    (tmp_path / "vectors_classes.txt").write_text("\n".join(names) + "\n")
    return path


def test_folder_division_is_seeded_by_group_and_keeps_unseen_whole(tmp_path):
    root = tmp_path / "mine"
    classes = ("apple", "bread", "chair", "dog", "eagle")
    _sketchy_tree(root, "sketch", "photo", classes=classes, photos=5)
    config = _config(tmp_path, "folder", root, generalized=True)
    data = get_dataset(config)
    assert data.info.split == "random1_seed0"  # default: 20% of 5 classes, seed 0
    unseen = [classes[i] for i in data.info.unseen]
    rng_choice = np.random.default_rng(0).choice(5, size=1, replace=False)
    assert unseen == [classes[int(rng_choice[0])]]
    _check_pairs(data, classes=5, photos=5)
    for c in data.info.seen:  # 5 photo groups: round(0.2 * 5) = 1 to test; 1 sketch-only group: stays in train
        assert (data.test_photos.label == c).sum() == 1 and (data.train_photos.label == c).sum() == 4
        lone = data.test_sketches.instance_id < 0
        assert (data.test_sketches.label[~lone] == c).sum() == 2 and not (data.test_sketches.label[lone] == c).any()
    queries, gallery = _evaluation_sets(data)  # generalized: seen-class test photos join the gallery
    assert set(gallery.label) == set(range(5)) and set(queries.label) == set(data.info.unseen)
    again = get_dataset(config)
    np.testing.assert_array_equal(again.test_photos.instance_id, data.test_photos.instance_id)
    other = get_dataset(_config(tmp_path, "folder", root, data_seed=3))
    assert not np.array_equal(other.test_photos.instance_id, data.test_photos.instance_id)


def test_tuberlin_and_quickdraw_extended_are_unpaired(tmp_path):
    layouts = {"tuberlin": ("png_ready", "ImageResized_ready", ("alarm clock", "banana", "bus"), ".JPEG"),
               "quickdraw": ("sketch", "images", ("bat", "palm tree", "zebra"), ".jpg")}  # fmt: skip
    for name, (sketch_dir, photo_dir, classes, ext) in layouts.items():
        root = tmp_path / name
        for c, cls in enumerate(classes):
            for i in range(3):
                _image(root / sketch_dir / cls / f"{i}.png", _colour(c, i, SKETCH))
                _image(root / photo_dir / cls / f"n0{i}{ext}", _colour(c, i, PHOTO), shape=(20, 30))
        (root / sketch_dir / "class_labels.txt").write_text("not a class\n")  # stray files are ignored
        split = {"tuberlin": "random1_seed0", "quickdraw": "doodle2search30"}[name]
        if name == "quickdraw":
            split = str(tmp_path / "d2s.txt")
            Path(split).write_text("# subset of doodle2search30\npalm_tree\nzebra")  # no final newline
        data = get_dataset(_config(tmp_path, name, root, split=split))
        assert data.info.class_names == classes
        for images in _all(data):
            assert (images.instance_id == -1).all()
        assert sum(len(x) for x in _all(data)) == 18
        if name == "quickdraw":
            assert data.info.unseen == (1, 2)  # "palm_tree" matched the folder "palm tree"
        photos = data.test_photos.image
        assert photos.shape[1:] == (SIZE, SIZE, 3)
        # JPEG: near the encoded colour after the squash-resize of the 20x30 photo.
        expected = 40 * data.test_photos.label + 10
        assert np.abs(photos[:, 16, 16, 0].astype(int) - expected).max() <= 3


def test_quickdraw_raw_bitmaps_strokes_and_photos(tmp_path):
    root = tmp_path / "qd"
    root.mkdir()
    bitmaps = np.zeros((5, 784), np.uint8)
    bitmaps[:, 28 * 14 : 28 * 15] = 255  # a white horizontal line on black, the file's convention
    np.save(root / "full_numpy_bitmap_cat.npy", bitmaps)
    lines = [{"word": "palm tree", "drawing": [[[0, 100, 200], [0, 100, 0]], [[50], [50]]]},
             {"word": "palm tree", "drawing": [[10, 90], [10, 90]]}]  # fmt: skip
    (root / "palm tree.ndjson").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for cls in ("cat", "palm tree"):
        _image(root / "images" / cls / "p0.jpg", (200, 30, 30))
    data = get_dataset(_config(tmp_path, "quickdraw_raw", root, split="random1_seed0", max_per_class=3))
    assert data.info.class_names == ("cat", "palm tree")
    sketches = [s for s in (data.train_sketches, data.test_sketches)]
    labels = np.concatenate([s.label for s in sketches])
    assert (labels == 0).sum() == 3 and (labels == 1).sum() == 2  # capped at 3 rows; both drawings read
    images = np.concatenate([s.image for s in sketches])
    cat = images[labels == 0]
    assert (cat[:, 0] > 250).all() and (cat[:, SIZE // 2 - 1 : SIZE // 2 + 1] < 128).any(axis=(1, 2, 3)).all()
    assert (images[labels == 1] < 128).any(axis=(1, 2, 3)).all()  # rendered ink
    assert len(data.train_photos) + len(data.test_photos) == 2
    drawn = quickdraw_raw.render_strokes([[[0, 10], [0, 10]]], 48)
    assert drawn.shape == (48, 48, 3) and drawn[24, 24, 0] < 128 and drawn[2, 45, 0] == 255
    with pytest.raises(ValueError, match="stroke"):
        quickdraw_raw.render_strokes([[[0, 1], [0]]], 32)


def _qmul_v1(root: Path, train=4, test=3, subset="shoes") -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        for kind, value in (("sketch", 0), ("edge", 100)):
            data = np.zeros((n, 16, 16), np.uint8)
            data[:] = value + np.arange(n, dtype=np.uint8)[:, None, None] + (50 if split == "test" else 0)
            scipy.io.savemat(root / f"{subset}_{kind}_db_{split}.mat", {"data": data})


def test_qmul_v1_pairs_by_index(tmp_path):
    _qmul_v1(tmp_path / "v1")
    data = get_dataset(_config(tmp_path, "qmul_v1", tmp_path / "v1"))
    info = data.info
    assert info.split == "official" and info.class_names == ("shoes",) and info.seen == info.unseen == (0,)
    assert [len(x) for x in _all(data)] == [4, 4, 3, 3]
    for sketches, photos, offset in (
        (data.train_sketches, data.train_photos, 0),
        (data.test_sketches, data.test_photos, 4),
    ):
        order_s, order_p = np.argsort(sketches.instance_id), np.argsort(photos.instance_id)
        np.testing.assert_array_equal(sketches.instance_id[order_s], offset + np.arange(len(sketches)))
        np.testing.assert_array_equal(photos.instance_id[order_p], sketches.instance_id[order_s])
        # sketch i and edge map i: values i and 100 + i (+ 50 in test), grey replicated to RGB
        np.testing.assert_array_equal(photos.image[order_p, 3, 3, 1] - sketches.image[order_s, 3, 3, 2], 100)
    queries, gallery = _evaluation_sets(data, "fine_grained")
    assert len(queries) == len(gallery) == 3


def test_qmul_v2_pairs_by_stem(tmp_path):
    root = tmp_path / "ShoeV2"
    for split, stems in (("train", ("2429245009", "2429245010")), ("test", ("1111",))):
        for j, stem in enumerate(stems):
            _image(root / f"{split}B" / f"{stem}.png", (j * 50, 100, 100))
            for k in (1, 2):
                _image(root / f"{split}A" / f"{stem}_{k}.png", (j * 50, 0, 0))
    _image(root / "testA" / "9999_1.png", (0, 0, 0))  # its photo is missing: instance_id -1
    data = get_dataset(_config(tmp_path, "qmul_v2", root))
    assert data.info.class_names == ("shoe",) and data.info.split == "official"
    assert [len(x) for x in _all(data)] == [4, 2, 3, 1]
    photo_of = {
        int(i): im[0, 0, 0] for i, im in zip(data.train_photos.instance_id, data.train_photos.image, strict=True)
    }
    for instance, image in zip(data.train_sketches.instance_id, data.train_sketches.image, strict=True):
        assert photo_of[int(instance)] == image[0, 0, 0]
    assert sorted(data.test_sketches.instance_id.tolist())[0] == -1


def test_to_rgb_modes():
    grey = Image.new("L", (8, 6), 77)
    np.testing.assert_array_equal(manual.to_rgb(grey, 4), np.full((4, 4, 3), 77, np.uint8))
    clear = Image.new("RGBA", (5, 5), (0, 0, 0, 0))  # transparent background: white, not black
    np.testing.assert_array_equal(manual.to_rgb(clear, 5), np.full((5, 5, 3), 255, np.uint8))
    half = manual.to_rgb(Image.new("LA", (5, 5), (0, 128)), 5)
    assert abs(int(half[0, 0, 0]) - 127) <= 1
    assert manual.to_rgb(np.zeros((3, 9), np.uint8), 16).shape == (16, 16, 3)


# --------------------------------------------------------------------------------------------- bad input


def _empty(path: Path) -> bool:
    return not path.exists() or not any(path.rglob("*"))


def test_missing_or_empty_root(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        get_dataset(_config(tmp_path, "sketchy", tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="config.data.root is empty"):
        get_dataset(_config(tmp_path, "tuberlin", ""))
    assert _empty(tmp_path / "tfds")


def test_wrong_layout_names_expected_folders(tmp_path):
    (tmp_path / "wrong" / "pictures" / "cat").mkdir(parents=True)
    for name, expected in (("sketchy", "sketch/tx_000000000000/<class>/"), ("tuberlin", "png_ready/<class>/"),
                           ("quickdraw", "QuickDraw_sketches_final/<class>/"), ("qmul_v2", "trainA/"),
                           ("qmul_v1", "_sketch_db_"), ("quickdraw_raw", "<class>.npy")):  # fmt: skip
        with pytest.raises(manual.LayoutError, match=expected.replace("(", r"\(")) as err:
            get_dataset(_config(tmp_path, name, tmp_path / "wrong"))
        assert str(tmp_path / "wrong") in str(err.value)
    _qmul_v1(tmp_path / "two")
    _qmul_v1(tmp_path / "two", subset="chairs")
    with pytest.raises(ValueError, match=r"\['chairs', 'shoes'\].*config.data.subset"):
        get_dataset(_config(tmp_path, "qmul_v1", tmp_path / "two"))
    assert get_dataset(_config(tmp_path, "qmul_v1", tmp_path / "two", subset="chairs")).info.class_names == ("chairs",)
    assert _empty(tmp_path / "tfds" / "jsbir_sketchy") and _empty(tmp_path / "tfds" / "jsbir_tuberlin")


def test_empty_class_folder_and_one_sided_class(tmp_path):
    root = tmp_path / "r"
    _sketchy_tree(root, "sketch", "photo", classes=("bat", "cat"), photos=2)
    _image(root / "photo" / "cow" / "p.png", (0, 0, 0))
    (root / "sketch" / "cow").mkdir()
    (root / "sketch" / "cow" / ".DS_Store").write_text("")
    with pytest.raises(manual.LayoutError, match=r"sketch/cow holds no images"):
        get_dataset(_config(tmp_path, "folder", root))
    shutil.rmtree(root / "photo" / "cow")
    with pytest.raises(manual.LayoutError, match=r"\['cow'\] have no folder in .*photo"):
        get_dataset(_config(tmp_path, "folder", root))
    assert _empty(tmp_path / "tfds")


def test_corrupt_image_fails_cleanly_or_is_skipped(tmp_path):
    root = tmp_path / "r"
    _sketchy_tree(root, "sketch", "photo", classes=("bat", "cat"), photos=2)
    good = (root / "photo" / "cat" / "n00000001_0.png").read_bytes()
    (root / "photo" / "cat" / "n00000001_0.png").write_bytes(good[: len(good) // 2])  # truncated
    data_dir = tmp_path / "tfds"
    data_dir.mkdir()
    with pytest.raises(manual.CorruptImageError, match=r"photo/cat/n00000001_0.png"):
        get_dataset(_config(tmp_path, "folder", root, split="random1_seed0"))
    assert list(data_dir.rglob("*")) == []  # no incomplete.* folder, no empty dataset folders
    data = get_dataset(_config(tmp_path, "folder", root, split="random1_seed0", skip_corrupt=True))
    assert sum(len(x) for x in (data.train_photos, data.test_photos)) == 3
    (prepared,) = data_dir.glob("jsbir_folder/*/*/metadata.json")
    assert json.loads(prepared.read_text())["skipped"] == ["photo/cat/n00000001_0.png"]
    assert data.info.skipped_files == ("photo/cat/n00000001_0.png",)
    # The skipping preparation is keyed by that setting: a run without it never reuses it, and fails again.
    assert prepared.parent.parent.name.endswith("_skipcorrupt")
    with pytest.raises(manual.CorruptImageError, match=r"photo/cat/n00000001_0.png"):
        get_dataset(_config(tmp_path, "folder", root, split="random1_seed0"))
    # A folder a killed preparation left behind is removed by the next one.
    stale = prepared.parent.parent / "incomplete.KILLED_1.0.0"
    stale.mkdir()
    get_dataset(_config(tmp_path, "folder", root, split="random1_seed0", skip_corrupt=True))
    assert not stale.exists()


def test_bad_drawing_and_bad_mat_files(tmp_path):
    root = tmp_path / "qd"
    root.mkdir()
    good = json.dumps({"word": "cat", "drawing": [[[0, 9], [0, 9]]]})
    (root / "cat.ndjson").write_text(f"{good}\n{{not json\n{good}\n")
    with pytest.raises(manual.CorruptImageError, match=r"cat.ndjson:2"):
        get_dataset(_config(tmp_path, "quickdraw_raw", root, split="random1_seed0"))
    _image(root / "dog.png", (0, 0, 0))  # a stray image is not a drawing file
    np.save(root / "dog.npy", np.zeros((2, 784), np.uint8))
    data = get_dataset(_config(tmp_path, "quickdraw_raw", root, split="random1_seed0", skip_corrupt=True))
    assert len(data.train_sketches) + len(data.test_sketches) == 4
    _qmul_v1(tmp_path / "v1")
    (tmp_path / "v1" / "shoes_sketch_db_test.mat").write_bytes(b"not a mat file" * 20)
    with pytest.raises(manual.CorruptImageError, match=r"shoes_sketch_db_test.mat"):
        get_dataset(_config(tmp_path, "qmul_v1", tmp_path / "v1"))
    assert _empty(tmp_path / "tfds" / "jsbir_qmul_v1")


def test_qmul_v1_reads_matlab_v73_files(tmp_path):
    h5py = pytest.importorskip("h5py")
    data = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "shoes_sketch_db_train.mat"
    with h5py.File(path, "w", userblock_size=512) as f:
        f["data"] = data.T  # MATLAB stores column-major: h5py sees the axes reversed
    with path.open("r+b") as f:  # the 128-byte MAT header that makes scipy defer to HDF5
        f.write(b"MATLAB 7.3 MAT-file".ljust(116) + bytes(8) + b"\x00\x02IM")
    np.testing.assert_array_equal(qmul.read_mat(path), data)


def test_bda_config_takes_dataset_split_root_and_semantics():
    from configs import bda

    config = bda.get_config("dataset=sketchy,split=eccv21,root=/data/Sketchy,semantics=word2vec")
    assert (config.data.name, config.data.split, config.data.root) == ("sketchy", "eccv21", "/data/Sketchy")
    assert config.data.semantics == "word2vec" and config.data.test_fraction == 0.2
    default = bda.get_config(None)
    assert (default.data.name, default.data.split, default.data.root) == ("synthetic", "default", "")


def test_split_class_missing_from_data_names_class_and_file(tmp_path):
    root = tmp_path / "r"
    _sketchy_tree(root, "sketch", "photo", classes=("bat", "cat"), photos=1)
    with pytest.raises(ValueError, match=r"eccv21\.txt.*'cabin'"):
        get_dataset(_config(tmp_path, "sketchy", root, split="eccv21"))
    with pytest.raises(ValueError, match="unknown split 'eccv99'"):
        get_dataset(_config(tmp_path, "sketchy", root, split="eccv99"))


def test_split_listing_every_class_is_refused(tmp_path):
    root = tmp_path / "r"
    _sketchy_tree(root, "sketch", "photo", classes=("bat", "cat"), photos=1)
    listed = tmp_path / "all.txt"
    listed.write_text("bat\ncat\n")
    with pytest.raises(ValueError, match=r"config.data.split=.*all\.txt.*lists all 2 classes as unseen: no seen class"):
        get_dataset(_config(tmp_path, "folder", root, split=str(listed)))


def test_prepared_data_belong_to_their_root(tmp_path):
    for name in ("a", "b"):
        _sketchy_tree(tmp_path / name, "sketch", "photo", classes=("bat", "cat"), photos=1)
    get_dataset(_config(tmp_path, "sketchy", tmp_path / "a", split="random1_seed0"))
    with pytest.raises(manual.LayoutError, match=r"prepared from .*a, not from .*b"):
        get_dataset(_config(tmp_path, "sketchy", tmp_path / "b", split="random1_seed0"))


def test_folder_datasets_of_several_roots_share_a_data_folder(tmp_path):
    _sketchy_tree(tmp_path / "a", "sketch", "photo", classes=("bat", "cat"), photos=1)
    _sketchy_tree(tmp_path / "b", "sketch", "photo", classes=("cow", "dog", "eel"), photos=2)
    first = get_dataset(_config(tmp_path, "folder", tmp_path / "a", split="random1_seed0"))
    second = get_dataset(_config(tmp_path, "folder", tmp_path / "b", split="random1_seed0"))
    again = get_dataset(_config(tmp_path, "folder", tmp_path / "a", split="random1_seed0"))
    assert first.info.class_names == again.info.class_names == ("bat", "cat")
    assert second.info.class_names == ("cow", "dog", "eel")
    assert sum(len(x) for x in _all(second)) == 3 * (2 * 2 + 1 + 2)  # 2 photos, 4 paired + 1 unpaired sketch
    roots = sorted(
        json.loads(p.read_text())["root"] for p in (tmp_path / "tfds").glob("jsbir_folder/*/*/metadata.json")
    )
    assert roots == [str((tmp_path / "a").resolve()), str((tmp_path / "b").resolve())]


def test_qmul_v1_mismatched_counts(tmp_path):
    _qmul_v1(tmp_path / "v1")
    scipy.io.savemat(tmp_path / "v1" / "shoes_edge_db_test.mat", {"data": np.zeros((2, 8, 8), np.uint8)})
    with pytest.raises(manual.LayoutError, match="holds 3 sketches but .*shoes_edge_db_test.mat holds 2"):
        get_dataset(_config(tmp_path, "qmul_v1", tmp_path / "v1"))
    assert qmul.v1_subsets(tmp_path / "v1") == ("shoes",)


# --------------------------------------------------------------------------------------------- shared data


@pytest.fixture(scope="module")
def sketchy_mini_tfds(tmp_path_factory):
    """One preparation of Sketchy-mini for the tests that divide it."""
    if not (SHARED / "sketchy_mini").is_dir():
        pytest.skip(f"{SHARED}/sketchy_mini is absent (no shared data)")
    return tmp_path_factory.mktemp("sketchy_mini")


def test_sketchy_mini_eccv21(sketchy_mini_tfds):
    data = get_dataset(_config(sketchy_mini_tfds, "sketchy", SHARED / "sketchy_mini", split="eccv21"))
    info = data.info
    assert info.num_classes == 125 and len(info.unseen) == 21 and info.split == "eccv21"
    assert info.semantics.shape == (125, 50)
    queries, gallery = _evaluation_sets(data)
    assert len(queries) == 525 and len(gallery) == 525
    assert {info.class_names[i] for i in info.unseen} >= {"bat", "cabin", "windmill"}


def test_sketchy_mini_few_class_subset(sketchy_mini_tfds):
    config = _config(sketchy_mini_tfds, "sketchy", SHARED / "sketchy_mini", classes="random26_seed0")
    config.update(split="random7_seed0", val_fraction=0.2)
    data = get_dataset(config)
    info = data.info
    assert info.num_classes == 26 and len(info.unseen) == 7 and len(info.seen) + len(info.validation) == 19
    folders = sorted(p.name for p in (SHARED / "sketchy_mini" / "photo").iterdir())
    chosen = np.random.default_rng(0).choice(125, size=26, replace=False)  # drawn from the sorted class names
    assert info.class_names == tuple(folders[i] for i in sorted(chosen))
    assert len(info.validation) == 4 and len(set(data.train_sketches.label)) == 15  # 20% of 19 held out, 15 train
    assert info.semantics.shape == (26, 50)
    queries, gallery = _evaluation_sets(data)
    assert len(queries) == len(gallery) == 7 * 25 and set(queries.label) == set(info.unseen)


@pytest.mark.skipif(not (SHARED / "sketchy_mini").is_dir(), reason=f"{SHARED}/sketchy_mini is absent (no shared data)")
def test_sketchy_mini_pairs(tmp_path):
    data = get_dataset(_config(tmp_path, "sketchy_pairs", SHARED / "sketchy_mini"))
    photos = len(data.train_photos) + len(data.test_photos)
    assert photos == 578 and len(set(data.test_photos.label.tolist())) > 100  # the drawn photos, most classes
    assert data.info.num_classes == 125


@pytest.mark.skipif(
    not (SHARED / "qmul_shoes_v1").is_dir(), reason=f"{SHARED}/qmul_shoes_v1 is absent (no shared data)"
)
def test_qmul_shoes_v1(tmp_path):
    data = get_dataset(_config(tmp_path, "qmul_v1", SHARED / "qmul_shoes_v1"))
    assert len(data.train_sketches) == len(data.train_photos) == 304
    assert len(data.test_sketches) == len(data.test_photos) == 115
    queries, gallery = _evaluation_sets(data, "fine_grained")
    assert sorted(queries.instance_id.tolist()) == sorted(gallery.instance_id.tolist()) == list(range(304, 419))
