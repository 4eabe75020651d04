"""Multi-head attention pooling: one query vector per example attends over the positions of a feature map.

For head h with query q_h (d features) and keys k_{h,n} at positions n, the weights are
``a_{h,n} = softmax_n(q_h . k_{h,n} / sqrt(d))`` and the head's output is ``sum_n a_{h,n} v_{h,n}``; the heads'
outputs are concatenated. Keys and values are linear projections of the feature map, made once by
:class:`AttentionPool` and shared by every query it is called with, so two queries (a sketch's and the photo's own)
attend over the same keys and values and differ only in where they look.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def split_heads(x: jax.Array, num_heads: int) -> jax.Array:
    """(..., F) -> (..., num_heads, F // num_heads)."""
    if x.shape[-1] % num_heads:
        raise ValueError(f"{x.shape[-1]} features do not split into {num_heads} heads")
    return x.reshape(*x.shape[:-1], num_heads, x.shape[-1] // num_heads)


def attention_weights(query: jax.Array, keys: jax.Array, num_heads: int) -> jax.Array:
    """Scaled dot-product attention weights of one query per example over N positions.

    Args:
      query: (B, F) queries.
      keys: (B, N, F) keys.
      num_heads: heads; each takes F / num_heads consecutive features.

    Returns:
      (B, num_heads, N) float32 weights, each row summing to one over the N positions.
    """
    q = split_heads(query.astype(jnp.float32), num_heads)  # (B, H, d)
    k = split_heads(keys.astype(jnp.float32), num_heads)  # (B, N, H, d)
    logits = jnp.einsum("bhd,bnhd->bhn", q, k) / jnp.sqrt(jnp.float32(q.shape[-1]))
    return jax.nn.softmax(logits, axis=-1)


def attend(weights: jax.Array, values: jax.Array) -> jax.Array:
    """(B, H, N) weights and (B, N, F) values -> (B, F): each head's weighted sum of its slice of the values."""
    v = split_heads(values, weights.shape[1])  # (B, N, H, d)
    out = jnp.einsum("bhn,bnhd->bhd", weights.astype(v.dtype), v)
    return out.reshape(out.shape[0], -1)


class AttentionPool(nn.Module):
    """Pools a feature map by multi-head attention from a given query.

    Attributes:
      num_heads: attention heads.
      key_features: features of the keys (and of the queries it is called with); a multiple of ``num_heads``.
      value_features: features of the values and of the pooled output; a multiple of ``num_heads``.
    """

    num_heads: int = 4
    key_features: int = 128
    value_features: int = 256

    def setup(self):
        self.keys = nn.Dense(self.key_features, name="keys")
        self.values = nn.Dense(self.value_features, name="values")

    def __call__(self, query: jax.Array, fmap: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Attends from ``query`` over ``fmap``.

        Args:
          query: (B, key_features) queries, already projected.
          fmap: (B, H, W, C) feature map.

        Returns:
          ``(pooled, weights)``: (B, value_features) pooled features and (B, num_heads, H * W) weights.
        """
        positions = fmap.reshape(fmap.shape[0], -1, fmap.shape[-1])
        weights = attention_weights(query, self.keys(positions), self.num_heads)
        return attend(weights, self.values(positions)), weights


class SpatialAttention(nn.Module):
    """DSSA's spatial attention with a residual connection: ``f' = f + f * M``.

    The mask ``M`` is a softmax over the positions of a score map: a 1x1 convolution of ``hidden`` channels with
    ReLU, then a 1x1 convolution to one channel. ``M`` sums to one over the positions of each example, so the
    residual keeps every position and ``f * M`` raises the ones the mask favours.

    Attributes:
      hidden: channels of the first 1x1 convolution.
    """

    hidden: int = 256

    @nn.compact
    def __call__(self, f: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(B, H, W, C) map -> (the attended map f', the (B, H, W) mask M)."""
        hidden = nn.relu(nn.Dense(self.hidden, name="hidden")(f))  # 1x1 convolutions are Dense on channels
        scores = nn.Dense(1, name="score")(hidden)[..., 0]
        batch, height, width = scores.shape
        mask = jax.nn.softmax(scores.reshape(batch, -1).astype(jnp.float32), axis=-1).reshape(batch, height, width)
        return f + f * mask[..., None].astype(f.dtype), mask
