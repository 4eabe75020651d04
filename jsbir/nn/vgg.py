"""VGG16 (Simonyan and Zisserman, 2015) convolutional trunk, with the layer names of ``keras.applications.VGG16``.

The module's parameters carry the Keras layer names (``block1_conv1`` ... ``block5_conv3``), so the port is a
rename-free copy; kernels are (kh, kw, in, out) in both. Images arrive in [-1, 1] RGB and are converted inside to
the Keras "caffe" input (see ``jsbir.nn.imagenet``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.nn.imagenet import caffe_preprocess

# (convolutions, channels) per block.
VGG16_BLOCKS = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))


class VGG16(nn.Module):
    """VGG16 without its classifier: thirteen 3x3 convolutions with ReLU, a 2x2 max-pool after each block.

    Attributes:
      final_pool: end with block5's pool (as Keras's ``include_top=False`` model, stride 32); False stops at
        ``block5_conv3`` (stride 16, a finer map).
    """

    final_pool: bool = True

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return VGG16_BLOCKS[-1][1]

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Maps (B, H, W, 3) images in [-1, 1] to a (B, H/32, W/32, 512) feature map (H/16 without the pool)."""
        del train  # no dropout or normalisation in the trunk
        x = caffe_preprocess(x.astype(jnp.float32))
        for b, (convs, features) in enumerate(VGG16_BLOCKS, start=1):
            for i in range(1, convs + 1):
                x = nn.relu(nn.Conv(features, (3, 3), padding="SAME", name=f"block{b}_conv{i}")(x))
            if b < len(VGG16_BLOCKS) or self.final_pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x
