"""Keras weights files read with h5py, for the VGG16 / ResNet-50 / HED ports.

Three layouts are read, all written by Keras itself:

- Keras 3 ``model.save_weights("x.weights.h5")``: a tree of objects, each with its own weights in ``vars/<i>`` and
  its children in subgroups: ``layers/<class name>[_<k>]`` for a functional or sequential model's layers, the
  attribute name for a subclassed model's (``block1/layers/conv2d``, ``dsn1`` in HED's). A layer is named by the
  ``name`` attribute of its ``vars`` group (Keras >= 3.4 writes it; older Keras 3 files do not and are refused,
  naming the fix), or, with ``key="path"``, by its group's path, which a subclassed model's structure fixes while
  its layers' automatic names (``conv2d_3``) depend on what else the Keras session built.
- Legacy full model ``model.save("x.h5")`` (Keras 2 and 3): ``model_weights/<layer>/...`` with the ``layer_names`` and
  ``weight_names`` attributes.
- Legacy weights only, Keras 2 ``model.save_weights("x.h5")``, which is also the layout of the files
  ``keras.applications`` downloads (``vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5``,
  ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``): the same groups at the root.

Within a layer, weights are taken by position in Keras's own order (``kernel, bias``; ``gamma, beta, moving_mean,
moving_variance``), as Keras's loader does: old files name them differently (``block1_conv1_W_1:0``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def _decode(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _read_keras3(group: Any, out: dict[str, list[np.ndarray]], path: str, key: str) -> None:
    if "vars" in group:
        arrays = [np.asarray(group["vars"][str(i)]) for i in range(len(group["vars"]))]
        if arrays:
            name = group["vars"].attrs.get("name", group.attrs.get("name"))
            if key == "path":
                name = group.name.lstrip("/")
            if name is None:
                raise ValueError(
                    f"{path}: layer group {group.name} has no 'name' attribute (a Keras 3 file older than 3.4);"
                    " load the model in Keras and save it again, or save it with model.save('x.h5')"
                )
            _put(out, _decode(name), arrays, path)
    for child in group:
        if child != "vars" and hasattr(group[child], "keys"):  # a subgroup, not a dataset
            _read_keras3(group[child], out, path, key)


def _read_legacy(root: Any, out: dict[str, list[np.ndarray]], path: str) -> None:
    for layer in (_decode(n) for n in root.attrs["layer_names"]):
        group = root[layer]
        per_layer: dict[str, list[np.ndarray]] = {}
        for weight in (_decode(n) for n in group.attrs.get("weight_names", [])):
            parts = weight.split("/")
            # Nested models store "inner_layer/kernel:0" under the outer layer's group.
            owner = parts[-2] if len(parts) >= 2 else layer
            per_layer.setdefault(owner, []).append(np.asarray(group[weight]))
        for owner, arrays in per_layer.items():
            _put(out, owner, arrays, path)


def _put(out: dict[str, list[np.ndarray]], name: str, arrays: list[np.ndarray], path: str) -> None:
    if name in out:
        raise ValueError(f"{path}: two layers are named {name!r}; cannot tell which weights are meant")
    out[name] = arrays


def read_keras_weights(path: str | os.PathLike, key: str = "name") -> dict[str, list[np.ndarray]]:
    """Reads every layer's weights from a Keras ``.h5`` / ``.weights.h5`` file (see the module docstring).

    Args:
      path: the file.
      key: "name", layers by their Keras names; or "path", Keras 3 layers by their group's path in the file
        (``block1/layers/conv2d``); the legacy layouts have no object tree and are keyed by name either way.

    Returns:
      Layer name (or path) -> that layer's arrays in Keras order; layers without weights are left out.

    Raises:
      FileNotFoundError: no such file.
      ValueError: the file is not one of the layouts above.
    """
    import h5py  # imported here: only the Keras ports need it

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Keras weights file {path!r} does not exist")
    out: dict[str, list[np.ndarray]] = {}
    try:
        handle = h5py.File(path, "r")
    except OSError as e:
        raise ValueError(
            f"{path} is not an HDF5 file, so not Keras weights (expected a .h5 / .weights.h5 written by Keras): {e}"
        ) from e
    with handle as f:
        if ("layers" in f or "vars" in f) and "layer_names" not in f.attrs:
            _read_keras3(f, out, path, key)
        elif "model_weights" in f:
            _read_legacy(f["model_weights"], out, path)
        elif "layer_names" in f.attrs:
            _read_legacy(f, out, path)
        else:
            raise ValueError(
                f"{path}: not a Keras weights file (expected 'layers/' or 'vars/' from save_weights('x.weights.h5'), "
                "'model_weights/' from model.save('x.h5'), or a root 'layer_names' attribute)"
            )
    return out


def take(weights: dict[str, list[np.ndarray]], layer: str, names: tuple[str, ...], path: str) -> dict[str, Any]:
    """Pops one layer's arrays and names them by position.

    Raises:
      KeyError: the layer is absent (the message names it and a few layers that are present).
      ValueError: the layer has another number of weights.
    """
    if layer not in weights:
        present = ", ".join(sorted(weights)[:8])
        raise KeyError(f"{path}: no layer {layer!r} in the Keras weights file (it has {present}, ...)")
    arrays = weights.pop(layer)
    if len(arrays) != len(names):
        raise ValueError(f"{path}: layer {layer!r} has {len(arrays)} weights, expected {len(names)} {names}")
    return dict(zip(names, arrays, strict=True))
