"""Keras ``keras.applications`` VGG16 and ResNet50 weights files ported to :mod:`jsbir.nn.vgg` and
:mod:`jsbir.nn.resnet`, whose parameters carry the Keras layer names so that each port is a rename-free copy."""

from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from jsbir.nn.resnet import RESNET50_STAGES, ResNet50
from jsbir.nn.vgg import VGG16, VGG16_BLOCKS
from jsbir.weights import keras_h5
from jsbir.weights.shapes import check_shapes

_BN_NAMES = ("scale", "bias", "mean", "var")
_KERAS_BN = ("gamma", "beta", "moving_mean", "moving_variance")


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
    check_shapes(expected, variables, path, "VGG16")
    return variables


def _layer_names() -> list[tuple[str, str]]:
    """(Keras layer name, kind) of every layer with weights, kind "conv" or "bn"."""
    names = [("conv1_conv", "conv"), ("conv1_bn", "bn")]
    for stage, _, blocks, _ in RESNET50_STAGES:
        for i in range(1, blocks + 1):
            for j in (0, 1, 2, 3) if i == 1 else (1, 2, 3):
                names += [(f"{stage}_block{i}_{j}_conv", "conv"), (f"{stage}_block{i}_{j}_bn", "bn")]
    return names


def load_keras_resnet50(path: str | os.PathLike) -> dict[str, Any]:
    """Ports a Keras ResNet50 weights file (with or without its top) to :class:`ResNet50` variables.

    Args:
      path: a ``.h5`` or ``.weights.h5`` file written by Keras (see ``keras_h5``); the classifier, if any, is
        ignored.

    Returns:
      ``{"params": ..., "batch_stats": ...}``: BatchNorm gamma/beta -> scale/bias, moving mean/variance ->
      batch_stats mean/var.

    Raises:
      KeyError, ValueError: a layer is missing or has the wrong shape (the message names it).
    """
    path = os.fspath(path)
    weights = keras_h5.read_keras_weights(path)
    params, stats = {}, {}
    for name, kind in _layer_names():
        if kind == "conv":
            params[name] = keras_h5.take(weights, name, ("kernel", "bias"), path)
        else:
            bn = keras_h5.take(weights, name, _KERAS_BN, path)
            bn = dict(zip(_BN_NAMES, bn.values(), strict=True))
            params[name] = {"scale": bn["scale"], "bias": bn["bias"]}
            stats[name] = {"mean": bn["mean"], "var": bn["var"]}
    variables = {"params": params, "batch_stats": stats}
    expected = jax.eval_shape(ResNet50().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    check_shapes(expected, variables, path, "ResNet50")
    return variables
