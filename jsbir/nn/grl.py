"""Gradient reversal: identity forward, -lambda times the upstream gradient backward.

Used by the spatial (feature-map) domain alignment of BDA-SketRet (docs/methods/bda.md): the domain
discriminator sits behind a gradient-reversal layer, so one minimisation trains the discriminator to
tell sketches from photos while the backbone receives the reversed gradient and learns features that
confuse it. No second optimiser.

lambda is a traced value, so a schedule such as `grl_lambda(step / total_steps)` can run inside a
jitted train step without recompiling as it changes.
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp


@jax.custom_vjp
def gradient_reversal(x: Any, lam: jax.Array | float) -> Any:
    """Returns `x` unchanged; on the backward pass multiplies its cotangent by `-lam`.

    Args:
      x: an array or a pytree of arrays.
      lam: scalar reversal strength (may be traced). No gradient flows into it.

    Returns:
      `x`, unchanged.
    """
    del lam
    return x


def _gradient_reversal_fwd(x: Any, lam: jax.Array | float) -> tuple[Any, jax.Array]:
    return x, jnp.asarray(lam)


def _gradient_reversal_bwd(lam: jax.Array, g: Any) -> tuple[Any, jax.Array]:
    # Cast back to each cotangent's dtype so a bfloat16 activation keeps a bfloat16 gradient.
    reversed_g = jax.tree_util.tree_map(lambda t: (-lam * t).astype(t.dtype), g)
    # lambda is a schedule value, not a parameter: its cotangent is defined as zero.
    return reversed_g, jnp.zeros_like(lam)


gradient_reversal.defvjp(_gradient_reversal_fwd, _gradient_reversal_bwd)


def grl_lambda(
    progress: jax.Array | float,
    gamma: float = 10.0,
    max_value: float = 1.0,
) -> jax.Array:
    """The usual DANN schedule: `max_value * (2 / (1 + exp(-gamma * p)) - 1)`.

    It rises smoothly from 0 at the start of training, so the discriminator is not fought while the
    features are still random, and saturates near `max_value`.

    Args:
      progress: training progress p, clipped to [0, 1] (for example step / total_steps).
      gamma: steepness of the ramp (10 in Ganin and Lempitsky).
      max_value: the value approached at p = 1.

    Returns:
      The scalar lambda, float32.
    """
    p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    return max_value * (2.0 / (1.0 + jnp.exp(-gamma * p)) - 1.0)


class GradientReversal(nn.Module):
    """Flax wrapper around `gradient_reversal` for use inside a module graph; no parameters."""

    @nn.compact
    def __call__(self, x: Any, lam: jax.Array | float) -> Any:
        """Applies gradient reversal.

        Args:
          x: an array or a pytree of arrays.
          lam: scalar reversal strength.

        Returns:
          `x` unchanged; gradients through it are multiplied by `-lam`.
        """
        return gradient_reversal(x, lam)
