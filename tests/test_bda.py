"""BDA-SketRet's spatial alignment: the reversed gradient reaches both backbones with the configured sign and scale,
and the evaluator's domain accuracy is the discriminator's own verdict on the images."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import bda as bda_config
from jsbir import losses, sharding
from jsbir.data import with_class_graph
from jsbir.data.types import DatasetInfo, Images, SbirData
from jsbir.eval.evaluator import Evaluator
from jsbir.methods import bda

SIZE = 16


def _info() -> DatasetInfo:
    vectors = np.random.default_rng(0).normal(size=(4, 8)).astype(np.float32)
    info = DatasetInfo("toy", "toy", ("a", "b", "c", "d"), (0, 1), (2, 3), vectors, SIZE)
    config = ml_collections.ConfigDict({"graph": "knn", "graph_k": 1, "semantics_setting": "inductive"})
    return with_class_graph(SbirData(info, *[None] * 4), config).info


@pytest.fixture(scope="module")
def setup():
    config = bda_config.get_config("runlocal")
    model = bda.Model.from_config(config.model, _info())
    rng = np.random.default_rng(0)
    batch = {
        "sketch": jnp.asarray(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32),
        "photo": jnp.asarray(rng.uniform(-1, 1, (4, SIZE, SIZE, 3)), jnp.float32),
        "label": jnp.asarray([0, 1, 0, 1], jnp.int32),
    }
    init = jax.jit(lambda rngs, batch: model.init(rngs, batch, train=False))
    variables = init({"params": jax.random.key(0), "sample": jax.random.key(1)}, batch)
    return config, model, variables, batch


def _adversarial_grads(model, variables, batch):
    """``lam -> `` gradients of the domain loss alone with the reversal layer at ``lam`` (compiled once)."""

    def loss(params, lam):
        (_, out), _ = model.apply(
            {**variables, "params": params}, batch, train=True, grl_lambda=lam, rngs={"sample": jax.random.key(2)},
            mutable=["batch_stats"],
        )  # fmt: skip
        logits = jnp.concatenate([out["sketch"]["domain_logits"], out["photo"]["domain_logits"]])
        return losses.domain_adversarial_loss(logits, jnp.asarray([1.0] * 4 + [0.0] * 4))

    grads = jax.jit(jax.grad(loss))
    return lambda lam: grads(variables["params"], jnp.float32(lam))


def test_reversed_gradient_reaches_both_backbones_scaled_by_minus_lambda(setup):
    _, model, variables, batch = setup
    grads = _adversarial_grads(model, variables, batch)
    plain = grads(-1.0)  # lambda -1 reverses nothing: the plain gradient
    lam = 0.37
    reversed_ = grads(lam)
    for net in ("sketch_net", "photo_net"):
        norm = float(optax.tree.norm(plain[net]))
        assert norm > 0, f"{net} receives no gradient from the domain loss"
        jax.tree.map(
            lambda r, p: np.testing.assert_allclose(r, -lam * p, rtol=1e-4, atol=1e-7), reversed_[net], plain[net]
        )
    # the discriminator itself learns to tell the domains apart: its gradient is not reversed
    jax.tree.map(
        lambda r, p: np.testing.assert_allclose(r, p, rtol=1e-5, atol=1e-8), reversed_["discriminator"],
        plain["discriminator"],
    )  # fmt: skip


def test_domain_logit_is_the_discriminators_mean_over_locations(setup):
    _, model, variables, batch = setup
    _, out = jax.jit(lambda v, b: model.apply(v, b, train=False))(variables, batch)
    for modality in ("sketch", "photo"):
        expected = np.asarray(out[modality]["domain_logits"]).mean(axis=(1, 2, 3))
        got = bda.domain_logit(model, variables, batch[modality], modality)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_evaluator_reports_domain_accuracy(setup, tmp_path):
    config, model, variables, _ = setup
    labels = np.array([2, 3] * 5)

    def images(seed):
        pixels = np.random.default_rng(seed).integers(0, 256, (10, SIZE, SIZE, 3), dtype=np.uint8)
        return Images(pixels, labels.astype(np.int32), np.arange(10) + 100 * seed)

    sketches, photos = images(1), images(2)
    data = SbirData(_info(), sketches, photos, sketches, photos)
    config = config.copy_and_resolve_references()
    with config.unlocked():
        config.eval.batch_size = 8
    evaluator = Evaluator(bda.METHOD, model, data, config, sharding.make_mesh())
    model_state = {k: v for k, v in variables.items() if k != "params"}
    state = type("State", (), {"params": variables["params"], "model_state": model_state, "step": jnp.int32(0)})()
    report = evaluator.run(state, str(tmp_path), tag="t", write=False)
    sets = evaluator.sets
    right = []
    for s, modality, sign in ((sets.queries, "sketch", 1), (sets.gallery, "photo", -1)):
        x = jnp.asarray(s.image[:8] / 127.5 - 1.0, jnp.float32)
        right.append(sign * np.asarray(bda.domain_logit(model, variables, x, modality)) > 0)
    assert report["metrics"]["domain_accuracy"] == pytest.approx(np.mean(np.concatenate(right)))
