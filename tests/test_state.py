"""Tests of the optimiser's freezing: frozen leaves stay bit-identical, the others move, bad patterns are named."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import common
from jsbir.state import TrainState, frozen_mask, make_optimizer, param_paths


def _params():
    rng = np.random.default_rng(0)

    def leaf(*shape):
        return jnp.asarray(rng.normal(size=shape) + 0.5, jnp.float32)  # no zeros: +0 == -0 would hide a change

    return {
        "sketch_net": {"stem_conv": {"kernel": leaf(3, 3, 3, 4)}, "blocks_14": {"kernel": leaf(4, 4)}},
        "photo_net": {"stem_conv": {"kernel": leaf(3, 3, 3, 4)}, "blocks_14": {"kernel": leaf(4, 4)}},
        "sketch_head": {"Dense_0": {"kernel": leaf(4, 8), "bias": leaf(8)}},
    }


def _train_config(**overrides) -> ml_collections.ConfigDict:
    config = common.train_config()
    config.update({"steps": 10, "warmup_steps": 1, "lr": 1e-2, "weight_decay": 0.1, **overrides})
    return config


def _run(config, params, steps=3):
    tx = make_optimizer(config, params)
    state = TrainState.create(params, {}, tx)
    for i in range(steps):
        # Nonzero gradients everywhere, different at each step.
        grads = jax.tree.map(lambda p, i=i: jnp.full_like(p, 0.3 * (i + 1)), params)
        state = state.apply_gradients(grads, {})
    return state


def test_param_paths_are_slash_joined():
    assert "sketch_net/stem_conv/kernel" in param_paths(_params())
    assert "sketch_head/Dense_0/bias" in param_paths(_params())


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_frozen_leaves_are_bit_identical_and_others_change(optimizer):
    params = _params()
    before = jax.tree.map(np.asarray, params)
    config = _train_config(optimizer=optimizer, freeze="_net/stem_")
    state = _run(config, params)
    after = jax.tree.map(np.asarray, state.params)
    for net in ("sketch_net", "photo_net"):
        np.testing.assert_array_equal(after[net]["stem_conv"]["kernel"], before[net]["stem_conv"]["kernel"])
        assert after[net]["stem_conv"]["kernel"].tobytes() == before[net]["stem_conv"]["kernel"].tobytes()
        assert not np.allclose(after[net]["blocks_14"]["kernel"], before[net]["blocks_14"]["kernel"])
    for leaf in ("kernel", "bias"):
        assert not np.allclose(after["sketch_head"]["Dense_0"][leaf], before["sketch_head"]["Dense_0"][leaf])
    assert int(state.step) == 3


def test_trained_leaves_match_an_unfrozen_optimiser_on_the_same_subset():
    # Clipping and weight decay see the trained leaves only: the head alone, frozen or not, moves the same way.
    params = _params()
    frozen = _run(_train_config(freeze="_net/", grad_clip=0.5), params)
    head_only = _run(_train_config(grad_clip=0.5), {"sketch_head": params["sketch_head"]})
    for leaf in ("kernel", "bias"):
        np.testing.assert_allclose(
            frozen.params["sketch_head"]["Dense_0"][leaf], head_only.params["sketch_head"]["Dense_0"][leaf], rtol=1e-6
        )


def test_no_pattern_freezes_nothing():
    params = _params()
    assert frozen_mask(params, "") is None
    state = _run(_train_config(), params)
    assert not np.allclose(
        state.params["sketch_net"]["stem_conv"]["kernel"], params["sketch_net"]["stem_conv"]["kernel"]
    )


def test_mask_marks_matching_paths():
    mask = frozen_mask(_params(), r"(sketch_net|photo_net)/blocks_([0-9]|1[0-3])/|stem_")
    assert mask["sketch_net"]["stem_conv"]["kernel"] and mask["photo_net"]["stem_conv"]["kernel"]
    assert not mask["sketch_net"]["blocks_14"]["kernel"]
    assert not mask["sketch_head"]["Dense_0"]["bias"]


def test_invalid_regex_names_the_config_key():
    with pytest.raises(ValueError, match=r"config\.train\.freeze='\(sketch_net' is not a valid regular expression"):
        make_optimizer(_train_config(freeze="(sketch_net"), _params())


def test_regex_matching_nothing_names_the_config_key():
    with pytest.raises(ValueError, match=r"config\.train\.freeze='teacher/' matches no parameter"):
        make_optimizer(_train_config(freeze="teacher/"), _params())


def test_abstract_params_are_enough():
    abstract = jax.eval_shape(_params)
    tx = make_optimizer(_train_config(freeze="stem_"), abstract)
    state = TrainState.create(_params(), {}, tx)
    assert jax.tree.structure(state.params) == jax.tree.structure(abstract)


def test_trainer_leaves_frozen_backbones_bit_identical(tmp_path):
    """Through the real train step (stop_gradient plus the optimiser's mask): backbones frozen, heads trained."""
    from configs import bda
    from jsbir import sharding, train
    from jsbir.data import get_dataset, pipeline
    from jsbir.methods import get_method

    config = bda.get_config("runlocal")
    config.data.data_dir = str(tmp_path / "tfds")
    config.train.freeze = "(sketch_net|photo_net)/"
    data = get_dataset(config.data)
    method = get_method(config.method)
    model = method.Model.from_config(config.model, data.info)
    mesh = sharding.make_mesh()
    sketches, photos = data.training_pairs()
    example = pipeline.example_batch("class_pairs", "rgb", sketches.image.shape[1:])
    state = train.StateFactory(method, model, config, example, mesh).build("scratch", None, {})
    before = jax.tree.map(np.array, state.params)  # host copies: the step donates the state's buffers
    frozen = frozen_mask(state.params, config.train.freeze)
    step = train.make_train_step(method, model, config.loss, config.train.steps, frozen)
    batches = pipeline.train_batches(sketches, photos, global_batch=config.train.batch_size, seed=0)
    for _ in range(3):
        state, measurements = step(state, sharding.to_global(next(batches), mesh), jax.random.key(0))
    assert float(measurements["grad_norm"]) > 0
    after = jax.tree.map(np.array, state.params)
    for name in ("sketch_net", "photo_net"):
        for old, new in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True):
            assert old.tobytes() == new.tobytes()
    for name in ("sketch_head", "photo_head", "class_gcn"):
        assert any(
            not np.array_equal(old, new)
            for old, new in zip(jax.tree.leaves(before[name]), jax.tree.leaves(after[name]), strict=True)
        ), name
