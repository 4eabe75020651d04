"""The frozen baseline and its fusion with a trained model (jsbir/eval/frozen.py), and class subsets of a real set.

Every figure is checked against a direct computation: the frozen metrics are the protocol's metrics of the cosine
of the pretrained features; the fused report is the metrics of ``(1 - w) * learned + w * frozen`` at the weight
that a brute-force scan of the validation scores picks; EfficientNet's frozen features of ``gray_crop`` views are
its pooled map of the same crops in colour.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jsbir import sharding
from jsbir.data import get_dataset, preprocess
from jsbir.data.real import class_subset
from jsbir.data.types import DatasetInfo, Images, SbirData
from jsbir.eval import frozen, report
from jsbir.eval.evaluator import Evaluator
from jsbir.eval.protocols import get_protocol
from jsbir.methods import api

DIM = 16


class Linear(nn.Module):
    """A linear map of feature vectors."""

    @nn.compact
    def __call__(self, x):
        return nn.Dense(DIM)(x)


def _embed(model, variables, x, modality):
    del modality
    e = model.apply(variables, x)
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


METHOD = api.Method(
    name="toy",
    Model=Linear,
    loss_fn=None,
    embed=_embed,
    inputs=lambda config: api.InputSpec(sampler="class_pairs", preprocess="features"),
    evaluation=lambda config: api.EvalSpec(protocol="zero_shot", views=1),
)


def _features(n, labels, seed, signal):
    """Feature vectors whose first dimensions tell the class apart (``signal``) under noise."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, DIM)).astype(np.float32)
    x[np.arange(n), np.asarray(labels) % DIM] += signal
    return Images(x, np.asarray(labels, np.int32), np.arange(n) + 1000 * seed)


def _data():
    names = tuple("abcdefgh")
    info = DatasetInfo("toy", "toy", names, (0, 1, 2, 3), (4, 5, 6, 7), np.eye(8, dtype=np.float32), 8, False)
    train = np.repeat(np.arange(4), 6)
    test, val = np.repeat(np.arange(4, 8), 6), np.repeat(np.arange(2, 4), 6)
    return SbirData(
        info,
        _features(24, train, 0, 1.5),
        _features(24, train, 1, 1.5),
        _features(24, test, 2, 1.5),
        _features(24, test, 3, 1.5),
        val_sketches=_features(12, val, 4, 1.5),
        val_photos=_features(12, val, 5, 1.5),
    )


def _config(fuse="validation"):
    config = ml_collections.ConfigDict({"method": "toy", "seed": 0})
    config.features = ml_collections.ConfigDict(
        {"backbone": "efficientnet_lite0", "backbone_args": {}, "pretrained": "imagenet", "input_size": 0}
    )
    config.train = ml_collections.ConfigDict({"select_metric": ""})
    config.eval = common.eval_config()
    config.eval.update(batch_size=8, hash_bits=4, fuse_frozen=fuse)
    return config


def _state(seed):
    variables = Linear().init(jax.random.key(seed), jnp.zeros((1, DIM)))
    return type("State", (), {"params": variables["params"], "model_state": {}, "step": jnp.int32(seed)})()


def _cosine(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _learned(state, images):
    return np.asarray(_embed(Linear(), {"params": state.params}, jnp.asarray(images.image), ""))


def test_fuse_by_hand():
    learned, baseline = np.array([[1.0, 0.0]]), np.array([[0.0, 1.0]])
    np.testing.assert_allclose(frozen.fuse(learned, baseline, 0.3), [[0.7, 0.3]])
    assert frozen.fuse(learned, baseline, 0.0) is learned
    np.testing.assert_allclose(frozen.fuse(learned, baseline, 1.0), baseline)


def test_frozen_metrics_and_the_fusion_weight_chosen_on_validation(tmp_path):
    data, config, mesh = _data(), _config(), sharding.make_mesh()
    protocol = get_protocol("zero_shot")
    validation = Evaluator(METHOD, Linear(), data, config, mesh, split="validation")
    test = Evaluator(METHOD, Linear(), data, config, mesh)
    state = _state(3)

    # the frozen baseline: the protocol's metrics of the features' own cosine (a feature dataset's features are the
    # pretrained network's), under frozen/
    sets = protocol.sets(data)
    frozen_scores = _cosine(sets.queries.image, sets.gallery.image)
    expected = protocol.metrics(frozen_scores, sets, config.eval)
    got = test.run(state, str(tmp_path), tag="t", write=False)
    for key, value in expected.items():
        if not key.endswith("[chance]"):
            assert got["metrics"][f"frozen/{key}"] == pytest.approx(value, abs=1e-6), key
    assert got["fusion"] == {"setting": "validation", "weight": 0.0}  # the test split never chooses a weight
    assert "learned/map@all[exact]" not in got["metrics"]

    # validation scans the weights and keeps the first best; the brute force over the same grid agrees
    vsets = protocol.validation_sets(data)
    learned = _learned(state, vsets.queries) @ _learned(state, vsets.gallery).T
    baseline = _cosine(vsets.queries.image, vsets.gallery.image)
    scan = [
        protocol.metrics((1 - w) * learned + w * baseline, vsets, config.eval)["map@all[exact]"]
        for w in frozen.FUSION_WEIGHTS
    ]
    best = frozen.FUSION_WEIGHTS[int(np.argmax(scan))]
    assert best > 0  # a random linear map loses to the features it maps: validation leans on the frozen ones
    report_v = validation.run(state, str(tmp_path), tag="v", write=False)
    assert report_v["fusion"]["weight"] == best
    assert report_v["metrics"]["map@all[exact]"] == pytest.approx(max(scan), abs=1e-6)
    assert report_v["metrics"]["map@all[exact]"] >= report_v["metrics"]["frozen/map@all[exact]"] - 1e-9
    learned_only = protocol.metrics(learned, vsets, config.eval)["map@all[exact]"]
    assert report_v["metrics"]["learned/map@all[exact]"] == pytest.approx(learned_only, abs=1e-6)

    # the test evaluation at the chosen weight ranks by the fused scores
    fused_test = test.run(state, str(tmp_path), tag="t", write=False, fusion_weight=best)
    tl = _learned(state, sets.queries) @ _learned(state, sets.gallery).T
    want = protocol.metrics((1 - best) * tl + best * frozen_scores, sets, config.eval)
    assert fused_test["metrics"]["map@all[exact]"] == pytest.approx(want["map@all[exact]"], abs=1e-6)
    table = report.format_table(fused_test)
    assert "fused with the frozen baseline's at weight" in table and "frozen" in table.splitlines()[1]


def test_fusion_settings():
    data, mesh = _data(), sharding.make_mesh()
    config = _config("bogus")
    with pytest.raises(ValueError, match=r"config.eval.fuse_frozen='bogus' is not one of"):
        Evaluator(METHOD, Linear(), data, config, mesh)
    config = _config("validation")
    config.features.pretrained = ""
    with pytest.raises(ValueError, match=r"config.features.pretrained is empty.*fuse_frozen='off'"):
        Evaluator(METHOD, Linear(), data, config, mesh)
    config.eval.fuse_frozen = "auto"  # no pretrained weights: no fusion and no baseline, and no error
    evaluator = Evaluator(METHOD, Linear(), data, config, mesh)
    assert evaluator.fusion == "off" and evaluator.frozen_metrics() == {}
    assert Evaluator(METHOD, Linear(), data, _config("auto"), mesh).fusion == "validation"
    assert frozen.fusion_setting(_config("auto"), "fine_grained") == "off"  # auto fuses zero-shot rankings only


def test_frozen_views_of_gray_crop_are_the_same_crops_in_colour(tmp_path):
    from jsbir.nn.efficientnet import EfficientNetLite
    from jsbir.weights.efficientnet import efficientnet_weights_path, load_efficientnet_lite

    rng = np.random.default_rng(0)
    images = Images(rng.integers(0, 256, (3, 40, 40, 3), dtype=np.uint8), np.arange(3), np.arange(3))
    views = preprocess.rgb_views_like("gray_crop", images.image, 2)
    crop = preprocess.crop_size(40)
    offset = (40 - crop) // 2
    centre = images.image[:, offset : offset + crop, offset : offset + crop] / 127.5 - 1.0
    np.testing.assert_allclose(views[0], centre, atol=1e-6)
    np.testing.assert_allclose(views[1], centre[:, :, ::-1], atol=1e-6)

    config = ml_collections.ConfigDict({"seed": 0})
    config.model = ml_collections.ConfigDict(
        {"backbone": "efficientnet_lite0", "backbone_args": {}, "pretrained": "imagenet"}
    )
    config.data = ml_collections.ConfigDict({"data_dir": str(tmp_path / "tfds")})  # the cache lives there
    config.eval = ml_collections.ConfigDict({"batch_size": 8})  # no features section: the model's backbone
    mesh = sharding.make_mesh()
    variables = load_efficientnet_lite("lite0", efficientnet_weights_path("lite0"))
    net = EfficientNetLite(variant="lite0")
    expected = [np.asarray(net.apply(variables, jnp.asarray(v, jnp.float32))).mean(axis=(1, 2)) for v in views]
    got = frozen.cached_views(config, mesh, images, "gray_crop", 2, "test_sketches")
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_allclose(g, e / np.linalg.norm(e, axis=1, keepdims=True), rtol=1e-4, atol=1e-5)
    # the second call is served by the cache: nothing is extracted
    original = frozen.extract_views
    frozen.extract_views = lambda *a, **k: pytest.fail("extracted again instead of reading the cache")
    try:
        again = frozen.cached_views(config, mesh, images, "gray_crop", 2, "test_sketches")
    finally:
        frozen.extract_views = original
    for g, a in zip(got, again, strict=True):
        np.testing.assert_array_equal(g, a)


def test_class_subset_relabels_in_class_order():
    names = ("ant", "bee", "cat", "dog", "eel")
    arrays = {"label": np.array([0, 1, 2, 3, 4, 3, 1]), "file_name": np.array(list("abcdefg"), dtype=object)}
    subset, kept = class_subset(arrays, names, "random3_seed0")
    chosen = np.sort(np.random.default_rng(0).choice(5, size=3, replace=False))
    assert kept == tuple(names[i] for i in chosen)
    keep = np.isin(arrays["label"], chosen)
    np.testing.assert_array_equal(subset["file_name"], arrays["file_name"][keep])
    np.testing.assert_array_equal(subset["label"], np.searchsorted(chosen, arrays["label"][keep]))


def test_class_subset_file_and_errors(tmp_path):
    names = ("ant", "bee", "cat")
    listed = tmp_path / "mine.txt"
    listed.write_text("# my classes\ncat\nant\n")
    subset, kept = class_subset({"label": np.array([2, 0, 1])}, names, str(listed))
    assert kept == ("ant", "cat") and subset["label"].tolist() == [1, 0]
    listed.write_text("cat\nyak\n")
    with pytest.raises(ValueError, match=r"config.data.classes=.*mine.txt names classes that the data lack: \['yak'\]"):
        class_subset({"label": np.array([0])}, names, str(listed))
    config = common.data_config("synthetic", 32)
    config.classes = "random3_seed0"
    with pytest.raises(ValueError, match=r"config.data.classes='random3_seed0': a class subset is for the real"):
        get_dataset(config)
