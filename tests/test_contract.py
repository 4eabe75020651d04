"""The method contract, checked for every registered method: built from its example batch, one jitted training
step on 8 fake devices, embedding shapes, and gallery embeddings that depend on the photo alone."""

from __future__ import annotations

import importlib
import inspect
import re

import jax
import ml_collections
import numpy as np
import pytest

from jsbir import sharding, train
from jsbir.data import pipeline, with_class_graph
from jsbir.data.types import DatasetInfo, SbirData
from jsbir.methods import api, available_methods, get_method

SIZE, BATCH, CLASSES, FEATURES = 32, 16, 6, 20


def _info(unseen_seed: int = 0, setting: str = "inductive") -> DatasetInfo:
    vectors = np.random.default_rng(0).normal(size=(CLASSES, 12)).astype(np.float32)
    vectors[4:] = np.random.default_rng(unseen_seed).normal(size=(2, 12))  # the unseen classes' vectors
    info = DatasetInfo(
        name="toy",
        split="toy",
        class_names=tuple(f"c{i}" for i in range(CLASSES)),
        seen=(0, 1, 2, 3),
        unseen=(4, 5),
        semantics=vectors,
        image_size=SIZE,
    )
    config = ml_collections.ConfigDict({"graph": "knn", "graph_k": 2, "semantics_setting": setting})
    return with_class_graph(SbirData(info, *[None] * 4), config).info


def _setup(name: str):
    config = importlib.import_module(f"configs.{name}").get_config("runlocal")
    method = get_method(name)
    model = method.Model.from_config(config.model, _info())
    inputs = method.inputs(config)
    size = config.data.image_size
    stored = (FEATURES,) if pipeline.samplers.get_sampler(inputs.sampler).stored == "features" else (size, size, 3)
    example = pipeline.example_batch(inputs.sampler, inputs.preprocess, stored)
    mesh = sharding.make_mesh()
    state = train.StateFactory(method, model, config, example, mesh).build("scratch", None, {})
    return config, method, model, example, mesh, state


def _batch(example: dict[str, np.ndarray], seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    batch = {
        k: rng.uniform(-1, 1, (BATCH, *v.shape[1:])).astype(np.float32)
        for k, v in example.items()
        if v.dtype == np.float32
    }
    rows = {k: rng.permutation(2 * BATCH)[:BATCH].astype(np.int32) for k, v in example.items() if k.endswith("_row")}
    return {**batch, **rows, "label": np.repeat(np.arange(4, dtype=np.int32), BATCH // 4)}


def test_every_method_module_is_registered():
    assert "bda" in available_methods()
    for name in available_methods():
        method = get_method(name)
        assert isinstance(method, api.Method) and method.name == name
    with pytest.raises(ValueError, match=r"config.method='nope' is not one of"):
        get_method("nope")


@pytest.mark.parametrize("name", available_methods())
def test_method_trains_one_step_on_eight_devices_and_embeds(name):
    config, method, model, example, mesh, state = _setup(name)
    assert jax.device_count() == 8
    step = train.make_train_step(method, model, config.loss, config.train.steps)
    batch = sharding.to_global(_batch(example), mesh)
    state, measurements = step(state, batch, jax.random.key(0))
    measurements = jax.device_get(measurements)
    assert int(state.step) == 1
    assert np.isfinite(measurements["loss"]) and 0 < measurements["grad_norm"] < np.inf, measurements
    assert all(np.isfinite(v) for v in measurements.values()), measurements

    variables = {"params": state.params, **state.model_state}
    inputs = {"sketch": batch["sketch"], "photo": batch["photo"]}
    spec = method.evaluation(config)
    dims = set()
    for modality, images in inputs.items():
        embedding = np.asarray(jax.jit(lambda v, x, m=modality: method.embed(model, v, x, m))(variables, images))
        assert embedding.ndim == 2 and embedding.shape[0] == BATCH and np.isfinite(embedding).all()
        dims.add(embedding.shape[1])
        if spec.codes:
            codes = np.asarray(method.codes(model, variables, images, modality))
            assert codes.shape == (BATCH, spec.code_bits)
            assert set(np.unique(codes)) <= {-1.0, 1.0}
    # One shared space: config.model.embed_dim, or for ZSCMR the class vectors' dimension.
    expected = config.model.embed_dim if "embed_dim" in config.model else model.semantics.shape[1]
    assert dims == {expected}


@pytest.mark.parametrize("name", available_methods())
def test_photo_embeddings_depend_on_the_photo_alone(name):
    config, method, model, example, _, state = _setup(name)
    variables = {"params": state.params, **state.model_state}
    assert "sketch" not in inspect.signature(method.embed).parameters
    photos = _batch(example)["photo"]
    embed = jax.jit(lambda v, x: method.embed(model, v, x, "photo"))
    together = np.asarray(embed(variables, photos))
    order = np.random.default_rng(2).permutation(BATCH)
    shuffled = np.asarray(embed(variables, photos[order]))
    np.testing.assert_allclose(shuffled, together[order], rtol=1e-5, atol=1e-5)
    alone = np.asarray(embed(variables, photos[3:4]))
    np.testing.assert_allclose(alone[0], together[3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", available_methods())
def test_config_declares_what_the_shared_code_reads(name):
    config = importlib.import_module(f"configs.{name}").get_config()
    method = get_method(name)
    assert config.method == name
    inputs, spec = method.inputs(config), method.evaluation(config)
    assert inputs.sampler in pipeline.samplers.SAMPLERS and inputs.preprocess in pipeline.preprocess.PREPROCESSORS
    from jsbir.eval.protocols import PROTOCOLS

    assert spec.protocol in PROTOCOLS and spec.views >= 1
    assert config.loss and config.train.steps > 0


@pytest.mark.parametrize("name", available_methods())
def test_unseen_class_vectors_reach_training_only_when_transductive(name):
    """Inductive by default: changing only the unseen classes' vectors changes neither the class graph among the
    seen classes nor the training loss; the transductive option lets them in."""
    config, method, model, example, _, state = _setup(name)
    if method.evaluation(config).protocol != "zero_shot":
        pytest.skip(f"{name} is instance-level: it reads no class vectors")
    batch = jax.tree.map(jax.numpy.asarray, _batch(example))
    rng = jax.random.key(0)

    def loss(unseen_seed, setting):
        other = method.Model.from_config(config.model, _info(unseen_seed, setting))
        total, _ = method.loss_fn(other, state.params, state.model_state, batch, rng, 0.5, config=config.loss)
        return float(total)

    assert not _info(1).class_graph[4:].any() and not _info(1).class_graph[:, 4:].any()
    assert loss(1, "inductive") == loss(2, "inductive")
    assert loss(1, "transductive") != loss(2, "transductive")


@pytest.mark.parametrize("name", ["bda", "crossatnet", "dssa"])
def test_efficientnet_recipes_follow_the_variant(name):
    # Lite0 has 16 blocks and Lite2 21: fine-tuning trains the last five of each (11-15, 16-20); DSSA freezes its
    # whole trunk, which ends at the stride-16 stage (Lite0's block 10, Lite2's block 14).
    module = importlib.import_module(f"configs.{name}")
    preset = ",preset=sketchy_mini" if name == "bda" else ""
    for backbone, last_frozen in (("efficientnet_lite0", 10), ("efficientnet_lite2", 15)):
        config = module.get_config(f"backbone={backbone}{preset}")
        assert config.model.pretrained == "imagenet"
        frozen = [bool(re.search(config.train.freeze, f"sketch_net/blocks_{block}/kernel")) for block in range(21)]
        if name == "dssa":  # the whole trunk, its map as it is over a 4 x 4 grid
            trunk, channels = {"efficientnet_lite0": (11, 112), "efficientnet_lite2": (15, 120)}[backbone]
            assert config.model.backbone_args.num_blocks == trunk and all(frozen[:trunk])
            assert not config.model.reduce_map and config.model.embed_dim == 16 * channels
        else:
            assert frozen == [block <= last_frozen for block in range(21)]
    if name == "bda":
        with pytest.raises(ValueError, match="preset=sketchy_mini is a recipe for an ImageNet EfficientNet-Lite"):
            module.get_config("backbone=compact_cnn,preset=sketchy_mini")


def test_bda_teacher_is_frozen_by_the_method_and_needs_a_classifier():
    config = importlib.import_module("configs.bda").get_config("backbone=efficientnet_lite0,preset=sketchy_mini")
    method = get_method("bda")
    assert "teacher_net/" not in method.freeze_pattern(config)
    config.model.distill = True
    assert method.freeze_pattern(config) == config.train.freeze + "|teacher_net/"
    local = importlib.import_module("configs.bda").get_config("runlocal")
    local.model.distill = True
    with pytest.raises(ValueError, match=r"config.model.distill needs a backbone with an ImageNet classifier"):
        method.Model.from_config(local.model, _info())
