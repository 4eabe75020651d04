"""Backbones by name. Each maps (B, H, W, 3) images in [-1, 1] to a (B, h, w, C) feature map; ``sketch_a_net`` maps
one-channel (B, H, W, 1) inputs on the 0..255 scale minus its mean pixel (the ``gray_crop`` preprocessing).

``get_backbone(name, **kwargs)`` looks a backbone up in ``BACKBONES``; pretrained backbones register here too.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax

from jsbir.nn import conv, efficientnet, resnet, vgg
from jsbir.nn.efficientnet import EfficientNetLite
from jsbir.nn.sketch_a_net import SketchANet


class CompactCNN(nn.Module):
    """A small strided CNN for CPU-sized runs: a 5x5 stride-2 stem, then stages of (stride-2 conv, conv).

    Every convolution is followed by GroupNorm and ReLU; a 64-pixel input gives an 8x8 map of
    ``width * 2 ** stages`` channels (``channels``).

    Attributes:
      width: channels of the stem; each stage doubles them.
      stages: number of stride-2 stages after the stem.
      groups: GroupNorm groups.
      impl: how the convolutions run (``jsbir.nn.conv.Conv``): "auto" (im2col on CPU), "shift" or "lax".
    """

    width: int = 24
    stages: int = 2
    groups: int = 8
    impl: str = "auto"

    @property
    def channels(self) -> int:
        """Channels of the output feature map."""
        return self.width * 2**self.stages

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        def block(x, features, stride, kernel=3):
            x = conv.Conv(features, kernel, strides=stride, impl=self.impl)(x)
            x = nn.GroupNorm(num_groups=min(self.groups, features))(x)
            return nn.relu(x)

        x = block(x, self.width, 2, kernel=5)
        for stage in range(1, self.stages + 1):
            features = self.width * 2**stage
            x = block(x, features, 2)
            x = block(x, features, 1)
        return x


BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "compact_cnn": CompactCNN,
    **{f"efficientnet_{v}": functools.partial(EfficientNetLite, variant=v) for v in efficientnet.VARIANTS},
    "vgg16": vgg.VGG16,
    "resnet50": resnet.ResNet50,
    "sketch_a_net": SketchANet,
}


def get_backbone(name: str, **kwargs) -> nn.Module:
    """Builds the backbone registered under ``name``.

    Raises:
      ValueError: naming the unknown backbone and the known ones.
    """
    if name not in BACKBONES:
        raise ValueError(f"config.model.backbone={name!r} is not one of {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def modality_backbones(name: str, args: tuple[tuple[str, object], ...], shared: bool) -> tuple[nn.Module, nn.Module]:
    """The (sketch, photo) backbones of a two-tower model: two of ``name`` built with ``args``, or one shared.

    Call it in a module's ``setup`` and assign the pair to two attributes: a shared backbone is then one set of
    parameters under the first attribute's name.
    """
    sketch = get_backbone(name, **dict(args))
    return sketch, (sketch if shared else get_backbone(name, **dict(args)))
