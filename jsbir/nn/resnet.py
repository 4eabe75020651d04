"""ResNet-50 v1 (He et al., 2016) trunk, with the layer names of ``keras.applications.ResNet50``.

The layout is Keras's (the stride sits on the first 1x1 convolution of a block, every convolution has a bias,
BatchNorm epsilon 1.001e-5), and the parameters carry the Keras layer names (``conv1_conv``, ``conv1_bn``,
``conv2_block1_0_conv`` ... ``conv5_block3_3_bn``), so the port is a rename-free copy. BatchNorm is frozen: it always
normalises with the running averages, in training too, as for the other pretrained backbones (SBIR batches are too
small and too unlike ImageNet to re-estimate them, and the trainer keeps ``batch_stats`` fixed). Images arrive in
[-1, 1] RGB and are converted inside to the Keras "caffe" input (see ``jsbir.nn.imagenet``).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.nn import conv
from jsbir.nn.imagenet import caffe_preprocess

# (stage name, bottleneck width, blocks, stride of the first block).
RESNET50_STAGES = (("conv2", 64, 3, 1), ("conv3", 128, 4, 2), ("conv4", 256, 6, 2), ("conv5", 512, 3, 2))
BN_EPSILON = 1.001e-5


class ResNet50(nn.Module):
    """ResNet-50 without its classifier: (B, H, W, 3) in [-1, 1] -> (B, H/32, W/32, 2048)."""

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return 4 * RESNET50_STAGES[-1][1]

    def _bn(self, x: jax.Array, name: str) -> jax.Array:
        return nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name=name)(x)

    def _block(self, x: jax.Array, width: int, stride: int, shortcut_conv: bool, name: str) -> jax.Array:
        if shortcut_conv:
            shortcut = self._bn(
                conv.PointwiseConv(4 * width, stride, use_bias=True, name=f"{name}_0_conv")(x), f"{name}_0_bn"
            )
        else:
            shortcut = x
        y = conv.PointwiseConv(width, stride, use_bias=True, name=f"{name}_1_conv")(x)
        y = nn.relu(self._bn(y, f"{name}_1_bn"))
        y = nn.Conv(width, (3, 3), padding="SAME", name=f"{name}_2_conv")(y)
        y = nn.relu(self._bn(y, f"{name}_2_bn"))
        y = conv.PointwiseConv(4 * width, use_bias=True, name=f"{name}_3_conv")(y)
        y = self._bn(y, f"{name}_3_bn")
        return nn.relu(shortcut + y)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        del train  # BatchNorm is frozen; see the module docstring
        x = caffe_preprocess(x.astype(jnp.float32))
        x = jnp.pad(x, ((0, 0), (3, 3), (3, 3), (0, 0)))
        x = nn.Conv(64, (7, 7), strides=(2, 2), padding="VALID", name="conv1_conv")(x)
        x = nn.relu(self._bn(x, "conv1_bn"))
        # Keras pads with zeros before the pool; after a ReLU that equals padding with -inf.
        x = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        x = nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")
        for stage, width, blocks, stride in RESNET50_STAGES:
            for i in range(1, blocks + 1):
                x = self._block(x, width, stride if i == 1 else 1, i == 1, f"{stage}_block{i}")
        return x
