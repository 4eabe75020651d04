"""Learned binary codes: a tanh hash layer whose slope is annealed upwards, and the sign codes it relaxes.

Training uses the relaxed code ``h = tanh(beta * (W x + b))``; as ``beta`` grows, ``h`` approaches
``sign(W x + b)``, the code used at test time, so the losses trained on ``h`` increasingly see the codes that will
be ranked. ``beta`` follows a geometric schedule over training progress (HashNet's continuation idea).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def slope(progress: jax.Array | float, start: float = 1.0, end: float = 10.0) -> jax.Array:
    """The tanh slope at training progress ``progress`` in [0, 1]: ``start * (end / start) ** progress``."""
    progress = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
    return start * (end / start) ** progress


def binarise(x: jax.Array) -> jax.Array:
    """+1 where ``x >= 0``, else -1 (float32): zero maps to +1, so every code is exactly +-1."""
    return jnp.where(x >= 0, 1.0, -1.0).astype(jnp.float32)
