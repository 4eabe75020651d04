"""Sketch-a-Net (Yu et al., BMVC 2015 / IJCV 2017), the one-channel backbone DSSA shares between sketches and edge
maps.

conv1 64@15x15 stride 3 (valid) -> max-pool 3/2 -> conv2 128@5x5 (valid) -> max-pool 3/2 -> conv3, conv4, conv5
256@3x3 (same), each convolution followed by ReLU. ``__call__`` returns the conv5 map (15 x 15 for DSSA's 225-pixel
crops), before its last pooling: DSSA's attention works on that map (``jsbir.nn.attention.SpatialAttention``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.nn import conv

GRAY_MEAN = 250.42  # the mean pixel of the 0..255 sketches and edge maps DSSA trains on, subtracted from its input

# (features, kernel, stride, padding, max-pool after)
LAYERS = (
    (64, 15, 3, "VALID", True),
    (128, 5, 1, "VALID", True),
    (256, 3, 1, "SAME", False),
    (256, 3, 1, "SAME", False),
    (256, 3, 1, "SAME", False),
)


def max_pool(x: jax.Array) -> jax.Array:
    """3 x 3 max-pooling with stride 2, no padding (Sketch-a-Net's)."""
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


class SketchANet(nn.Module):
    """Sketch-a-Net up to conv5 on (B, H, W, 1) inputs (0..255 minus the mean pixel, ``gray_crop``).

    Attributes:
      impl: how the convolutions run (``jsbir.nn.conv.Conv``).
    """

    impl: str = "auto"

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return LAYERS[-1][0]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # no batch statistics or dropout in the trunk
        for i, (features, kernel, stride, padding, pool) in enumerate(LAYERS):
            x = conv.Conv(features, kernel, strides=stride, padding=padding, impl=self.impl, name=f"conv{i + 1}")(x)
            x = nn.relu(x + self.param(f"bias{i + 1}", nn.initializers.zeros, (features,), jnp.float32))
            if pool:
                x = max_pool(x)
        return x
