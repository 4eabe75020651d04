"""CrossATNet: the cosine cross-modal triplet by hand, the total loss as the weighted sum of its logged terms, and a
test-time photo embedding that no sketch parameter or input can change."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import crossatnet as crossatnet_config
from jsbir import losses
from jsbir.data import semantics
from jsbir.data.types import DatasetInfo
from jsbir.methods import crossatnet

SIZE, BATCH = 32, 8


@pytest.fixture(scope="module")
def setup():
    vectors = np.random.default_rng(0).normal(size=(5, 8)).astype(np.float32)
    info = DatasetInfo(
        name="toy",
        split="toy",
        class_names=tuple("abcde"),
        seen=(0, 1, 2),
        unseen=(3, 4),
        semantics=vectors,
        image_size=SIZE,
        class_graph=semantics.class_graph(vectors, kind="mst"),
        semantic_distance=semantics.semantic_distances(vectors).astype(np.float32),
    )
    config = crossatnet_config.get_config("runlocal")
    model = crossatnet.Model.from_config(config.model, info)
    rng = np.random.default_rng(1)
    batch = {
        "sketch": jnp.asarray(rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)), jnp.float32),
        "photo": jnp.asarray(rng.uniform(-1, 1, (BATCH, SIZE, SIZE, 3)), jnp.float32),
        "label": jnp.asarray([0, 0, 1, 1, 2, 2, 0, 1], jnp.int32),
    }
    variables = model.init(jax.random.key(0), batch)
    return config, model, variables, batch


def test_cosine_cross_modal_triplet_hand_values():
    # Cosine distances d = 1 - cos: d(s0,p0) = 0, d(s0,p1) = d(s1,p1) = 1 - 1/sqrt(2), d(s1,p0) = 1; margin 0.5.
    sketch = np.array([[1.0, 0.0], [0.0, 1.0]])
    photo = np.array([[1.0, 0.0], [1.0, 1.0]])
    labels = np.array([0, 1])
    c = 1 - 1 / np.sqrt(2)
    sketch_anchored = (max(0, 0.5 + 0 - c) + max(0, 0.5 + c - 1)) / 2
    photo_anchored = (max(0, 0.5 + 0 - 1) + max(0, 0.5 + c - c)) / 2
    out = losses.cross_modal_triplet_loss(sketch, photo, labels, 0.5, metric="cosine", mining="hard")
    np.testing.assert_allclose(out, 0.5 * (sketch_anchored + photo_anchored), rtol=1e-6)
    np.testing.assert_allclose(out, 0.5 * (0.5 - c) / 2 + 0.5 * 0.5 / 2, rtol=1e-6)  # = 0.1768


def test_total_loss_is_the_weighted_sum_of_its_terms(setup):
    config, model, variables, batch = setup
    terms = ("tri", "self", "cls", "topo", "att", "hash", "quant", "balance")
    names = {"tri": "loss_tri", "self": "loss_tri_self", "hash": "loss_hash_tri"}
    weights = dict(zip(terms, np.random.default_rng(2).uniform(0.1, 2.0, len(terms)), strict=True))
    loss_config = config.loss.copy_and_resolve_references()
    with loss_config.unlocked():
        for term, w in weights.items():
            loss_config[f"w_{term}"] = float(w)
    params = variables["params"]
    total, (_, m) = crossatnet.loss_fn(model, params, {}, batch, jax.random.key(0), jnp.float32(0.5), loss_config)
    expected = sum(w * float(m[names.get(t, f"loss_{t}")]) for t, w in weights.items())
    np.testing.assert_allclose(float(total), expected, rtol=1e-5)
    np.testing.assert_allclose(m["hash_slope"], np.sqrt(10.0), rtol=1e-6)  # halfway from 1 to 10, geometrically
    assert all(float(m[names.get(t, f"loss_{t}")]) > 0 for t in terms)


@pytest.mark.parametrize("hash_photo", ["self", "guided"])
def test_code_triplet_uses_the_configured_photo_branch(setup, hash_photo):
    config, model, variables, batch = setup
    loss_config = config.loss.copy_and_resolve_references()
    with loss_config.unlocked():
        loss_config.hash_photo = hash_photo
    _, (_, m) = crossatnet.loss_fn(
        model, variables["params"], {}, batch, jax.random.key(0), jnp.float32(0.5), loss_config
    )
    _, out = model.apply(variables, batch, train=True, mutable=["batch_stats"])[0]
    beta = np.sqrt(10.0)  # the slope halfway through training
    photo = out["codes"]["photo_self" if hash_photo == "self" else "photo"]
    expected = losses.cross_modal_triplet_loss(
        losses.l2_normalise(jnp.tanh(beta * out["codes"]["sketch"])),
        losses.l2_normalise(jnp.tanh(beta * photo)),
        batch["label"],
        loss_config.margin,
        metric="cosine",
        mining=loss_config.triplet_mining,
    )
    np.testing.assert_allclose(float(m["loss_hash_tri"]), float(expected), rtol=1e-5)
    with loss_config.unlocked():
        loss_config.hash_photo = "both"
    with pytest.raises(ValueError, match=r"config.loss.hash_photo='both' is not one of \['guided', 'self'\]"):
        crossatnet.loss_fn(model, variables["params"], {}, batch, jax.random.key(0), jnp.float32(0.5), loss_config)


def test_attention_term_is_the_kl_from_the_guided_map():
    target = jnp.array([[[0.5, 0.5]]])
    predicted = jnp.array([[[0.25, 0.75]]])
    expected = 0.5 * np.log(0.5 / 0.25) + 0.5 * np.log(0.5 / 0.75)
    np.testing.assert_allclose(crossatnet._kl_rows(target, predicted), expected, rtol=1e-5)
    np.testing.assert_allclose(crossatnet._kl_rows(target, target), 0.0, atol=1e-7)


def test_test_time_photo_embedding_ignores_every_sketch_parameter(setup):
    _, model, variables, batch = setup

    def photo_embedding(params):
        return jnp.sum(crossatnet.embed(model, {"params": params}, batch["photo"], "photo") ** 2 * 3.0)

    grads = jax.grad(photo_embedding)(variables["params"])
    for name in ("sketch_net", "sketch_query", "sketch_head"):
        assert all(float(jnp.abs(g).max()) == 0.0 for g in jax.tree.leaves(grads[name])), name
    assert any(float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(grads["photo_query"]))

    def guided(params):
        _, out = model.apply({"params": params}, batch)
        return jnp.sum(out["photo"]["guided_embedding"])

    # Training's photo feature, by contrast, is steered by the sketch.
    assert any(
        float(jnp.abs(g).max()) > 0 for g in jax.tree.leaves(jax.grad(guided)(variables["params"])["sketch_query"])
    )


def test_equal_queries_give_equal_photo_embeddings(setup):
    """When the self branch asks what the sketch asks, the self-attended photo is the sketch-guided one: the
    reason the attention-matching term makes the test-time embedding follow training's."""
    _, model, variables, batch = setup
    params = dict(variables["params"])
    params["sketch_net"] = params["photo_net"]
    params["sketch_query"] = params["photo_query"]
    same = {**batch, "sketch": batch["photo"]}
    _, out = model.apply({"params": params}, same)
    np.testing.assert_allclose(out["photo"]["guided_embedding"], out["photo"]["embedding"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["photo"]["guided_attention"], out["photo"]["attention"], rtol=1e-5, atol=1e-7)


def test_codes_are_exactly_signed_and_bits_are_configurable(setup):
    _, model, variables, batch = setup
    codes = np.asarray(crossatnet.codes(model, variables, batch["sketch"], "sketch"))
    assert codes.shape == (BATCH, 64) and set(np.unique(codes)) <= {-1.0, 1.0}
    assert crossatnet_config.get_config("bits=16").model.hash_bits == 16
    with pytest.raises(ValueError, match=r"bits=24 is not one of \(16, 32, 64, 128\)"):
        crossatnet_config.get_config("bits=24")
