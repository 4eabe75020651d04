"""Attention pooling and learned codes: weights sum to one and attend where a hand-built example says, codes are
exactly +-1 and the balance loss balances them, and Hamming ranking is ranking by (bits - dot) / 2."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jsbir import losses, metrics
from jsbir.nn import attention, hashing


def test_attention_weights_sum_to_one_over_positions():
    rng = np.random.default_rng(0)
    weights = attention.attention_weights(rng.normal(size=(3, 8)), rng.normal(size=(3, 10, 8)), num_heads=2)
    assert weights.shape == (3, 2, 10)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, rtol=1e-6)
    assert (np.asarray(weights) > 0).all()


def test_hand_built_example_attends_where_expected():
    # Two heads of two features each over four positions. Head 0's query points along feature 0, which only
    # position 2's key carries; head 1's query points along feature 3, carried only by position 0.
    keys = np.zeros((1, 4, 4), np.float32)
    keys[0, 2, 0] = 10.0
    keys[0, 0, 3] = 10.0
    query = np.array([[1.0, 0.0, 0.0, 1.0]], np.float32)
    weights = np.asarray(attention.attention_weights(query, keys, num_heads=2))[0]
    # Logits: 10 / sqrt(2) at the matching position, 0 elsewhere.
    top = np.exp(10 / np.sqrt(2))
    np.testing.assert_allclose(weights[0], [1, 1, top, 1] / (top + 3), rtol=1e-5)
    np.testing.assert_allclose(weights[1], [top, 1, 1, 1] / (top + 3), rtol=1e-5)
    values = np.arange(16, dtype=np.float32).reshape(1, 4, 4)  # head 0 reads features 0-1, head 1 features 2-3
    pooled = np.asarray(attention.attend(jnp.asarray(weights[None]), values))
    np.testing.assert_allclose(pooled[0, :2], weights[0] @ values[0, :, :2], rtol=1e-5)
    np.testing.assert_allclose(pooled[0, 2:], weights[1] @ values[0, :, 2:], rtol=1e-5)


def test_attention_pool_shares_keys_and_values_between_queries():
    pool = attention.AttentionPool(num_heads=2, key_features=4, value_features=6)
    fmap = jnp.asarray(np.random.default_rng(1).normal(size=(2, 3, 3, 5)), jnp.float32)
    query = jnp.ones((2, 4))
    variables = pool.init(jax.random.key(0), query, fmap)
    assert set(variables["params"]) == {"keys", "values"}
    pooled, weights = pool.apply(variables, query, fmap)
    assert pooled.shape == (2, 6) and weights.shape == (2, 2, 9)
    with pytest.raises(ValueError, match="do not split into 2 heads"):
        attention.split_heads(jnp.ones((2, 5)), 2)


def test_slope_is_geometric_and_codes_are_exactly_signed():
    np.testing.assert_allclose(hashing.slope(0.0, 1.0, 16.0), 1.0)
    np.testing.assert_allclose(hashing.slope(0.5, 1.0, 16.0), 4.0, rtol=1e-6)
    np.testing.assert_allclose(hashing.slope(2.0, 1.0, 16.0), 16.0, rtol=1e-6)  # clipped at the end
    codes = np.asarray(hashing.binarise(jnp.array([[-0.3, 0.0, 2.0, -0.0]])))
    np.testing.assert_array_equal(codes, [[-1.0, 1.0, 1.0, 1.0]])


def test_balance_and_quantisation_losses_balance_codes_on_a_fixed_batch():
    """Features far from the origin give nearly every bit one sign for the whole batch; the two hashing losses
    alone must bring each bit to within 0.1 of half +1, half -1 (balance tolerance: |batch mean| <= 0.1)."""
    x = jnp.asarray(np.random.default_rng(0).normal(size=(256, 16)) + 3.0, jnp.float32)
    params = {"w": jnp.asarray(np.random.default_rng(1).normal(size=(16, 32)) * 0.1, jnp.float32), "b": jnp.ones(32)}

    def codes_of(p):
        return x @ p["w"] + p["b"]

    def loss(p):
        relaxed = jnp.tanh(codes_of(p))  # slope 1: the start of the annealing
        return losses.quantization_loss(relaxed) + 10.0 * losses.bit_balance_loss(relaxed)

    before = np.asarray(hashing.binarise(codes_of(params)))
    assert np.abs(before.mean(0)).mean() > 0.7  # nearly every bit one-sided at the start
    tx = optax.adam(0.01)
    opt = tx.init(params)

    @jax.jit
    def step(p, o):
        updates, o = tx.update(jax.grad(loss)(p), o)
        return optax.apply_updates(p, updates), o

    for _ in range(500):
        params, opt = step(params, opt)
    after = np.asarray(hashing.binarise(codes_of(params)))
    assert set(np.unique(after)) == {-1.0, 1.0}
    assert np.abs(after.mean(0)).max() <= 0.1, np.abs(after.mean(0))


def test_hamming_ranking_is_ranking_by_half_bits_minus_dot_with_ties_by_index():
    rng = np.random.default_rng(0)
    bits = 16
    q = np.where(rng.random((20, bits)) < 0.5, 1, -1)
    g = np.where(rng.random((50, bits)) < 0.5, 1, -1)
    g[10:20] = g[0]  # many exact ties
    scores = metrics.hamming_scores(metrics.pack_codes(q), metrics.pack_codes(g), bits)
    distance = (bits - q @ g.T) / 2
    np.testing.assert_array_equal(
        metrics.hamming_distance(metrics.pack_codes(q), metrics.pack_codes(g), bits), distance
    )
    np.testing.assert_array_equal(metrics.rank(scores), np.argsort(distance, axis=1, kind="stable"))
