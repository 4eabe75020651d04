"""Gradient reversal: identity forward, exactly -lambda times the upstream gradient backward."""

import jax
import jax.numpy as jnp
import numpy as np

from jsbir.nn.grl import GradientReversal, gradient_reversal, grl_lambda


def test_forward_is_identity():
    x = jnp.arange(6.0).reshape(2, 3)
    np.testing.assert_array_equal(gradient_reversal(x, 0.7), x)
    np.testing.assert_array_equal(jax.jit(gradient_reversal)(x, 0.7), x)


def test_gradient_is_minus_lambda_times_upstream_under_jit():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    lam = jnp.float32(0.37)

    @jax.jit
    def grads(x, lam):
        def loss(x, lam):
            return jnp.sum(w * gradient_reversal(x, lam))

        return jax.grad(loss, argnums=(0, 1))(x, lam)

    gx, glam = grads(x, lam)
    np.testing.assert_array_equal(gx, -lam * w)  # exact, not approximate
    assert float(glam) == 0.0
    # A new lambda reuses the compiled step (lambda is traced) and scales the gradient.
    gx2, _ = grads(x, jnp.float32(2.0))
    np.testing.assert_array_equal(gx2, -2.0 * w)


def test_pytree_and_dtype():
    tree = {"a": jnp.ones(2, jnp.bfloat16), "b": jnp.ones(3)}
    g = jax.grad(lambda t: jnp.sum(gradient_reversal(t, 0.5)["a"] * 3) + jnp.sum(t["b"]))(tree)
    assert g["a"].dtype == jnp.bfloat16
    np.testing.assert_array_equal(np.asarray(g["a"], np.float32), [-1.5, -1.5])
    np.testing.assert_array_equal(g["b"], [1.0, 1.0, 1.0])


def test_module_has_no_params_and_reverses():
    module = GradientReversal()
    x = jnp.array([1.0, -2.0])
    variables = module.init(jax.random.key(0), x, 1.0)
    assert not jax.tree_util.tree_leaves(variables)
    g = jax.grad(lambda x: jnp.sum(module.apply(variables, x, 0.25) * jnp.array([4.0, 8.0])))(x)
    np.testing.assert_array_equal(g, [-1.0, -2.0])


def test_lambda_schedule_values():
    # 2 / (1 + exp(-g p)) - 1 = tanh(g p / 2)
    np.testing.assert_allclose(grl_lambda(0.0), 0.0, atol=1e-7)
    np.testing.assert_allclose(grl_lambda(0.5), 0.9866142981514303, rtol=1e-6)
    np.testing.assert_allclose(grl_lambda(1.0), 0.9999092042625952, rtol=1e-6)
    np.testing.assert_allclose(grl_lambda(2.0), 0.9999092042625952, rtol=1e-6)  # clipped to p = 1
    np.testing.assert_allclose(grl_lambda(-1.0), 0.0, atol=1e-7)  # clipped to p = 0
    np.testing.assert_allclose(grl_lambda(0.5, gamma=2.0, max_value=0.5), 0.5 * 0.46211715726, 1e-6)
    np.testing.assert_allclose(jax.jit(grl_lambda)(jnp.float32(0.5)), 0.9866143, rtol=1e-6)
