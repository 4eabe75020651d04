"""VGG16 (Simonyan and Zisserman, 2015) convolutional trunk, loadable from a Keras ``keras.applications.VGG16`` file.

The module's parameters carry the Keras layer names (``block1_conv1`` ... ``block5_conv3``), so the port is a
rename-free copy; kernels are (kh, kw, in, out) in both. Images arrive in [-1, 1] RGB and are converted inside to
the Keras "caffe" input (see ``keras_h5.caffe_preprocess``).
"""

from __future__ import annotations

import os
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.models import keras_h5, pretrained

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
        x = keras_h5.caffe_preprocess(x.astype(jnp.float32))
        for b, (convs, features) in enumerate(VGG16_BLOCKS, start=1):
            for i in range(1, convs + 1):
                x = nn.relu(nn.Conv(features, (3, 3), padding="SAME", name=f"block{b}_conv{i}")(x))
            if b < len(VGG16_BLOCKS) or self.final_pool:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return x


def load_keras_vgg16(path: str | os.PathLike, **module_kwargs: Any) -> dict[str, Any]:
    """Ports a Keras VGG16 weights file (with or without its top) to :class:`VGG16` variables.

    Args:
      path: a ``.h5`` or ``.weights.h5`` file written by Keras (see ``keras_h5``); the classifier layers, if any,
        are ignored.
      **module_kwargs: attributes of the :class:`VGG16` the weights are for.

    Returns:
      ``{"params": ...}`` for ``VGG16(**module_kwargs)``.

    Raises:
      KeyError, ValueError: a layer is missing or has the wrong shape (the message names it).
    """
    path = os.fspath(path)
    weights = keras_h5.read_keras_weights(path)
    params = {}
    for b, (convs, _) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            name = f"block{b}_conv{i}"
            params[name] = keras_h5.take(weights, name, ("kernel", "bias"), path)
    expected = jax.eval_shape(VGG16(**module_kwargs).init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    variables = {"params": params}
    pretrained.check_shapes(expected, variables, path, "VGG16")
    return variables
