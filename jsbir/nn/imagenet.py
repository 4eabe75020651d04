"""Input conventions of ImageNet-pretrained networks: every backbone takes RGB in [-1, 1] and converts inside.

Keeping the conversion inside the network means the data pipeline has one image format for every backbone, and a
ported network sees exactly the input its original training saw.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

# keras.applications.imagenet_utils.preprocess_input(mode="caffe"): BGR order, ImageNet means on 0..255.
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
# torchvision / EfficientNet: RGB in [0, 1], then per-channel standardisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def caffe_preprocess(images: jax.Array) -> jax.Array:
    """Maps RGB images in [-1, 1] to Keras "caffe" inputs: 0..255, RGB -> BGR, ImageNet channel means removed."""
    x = (images + 1.0) * 127.5
    return x[..., ::-1] - jnp.asarray(CAFFE_BGR_MEAN, x.dtype)


def standardise(images: jax.Array) -> jax.Array:
    """Maps RGB images in [-1, 1] to [0, 1] standardised by the ImageNet channel means and deviations."""
    mean = jnp.asarray(IMAGENET_MEAN, images.dtype)
    std = jnp.asarray(IMAGENET_STD, images.dtype)
    return ((images + 1) * 0.5 - mean) / std
