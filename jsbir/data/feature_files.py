"""Features a user brings instead of images: ``.npy`` and MATLAB ``.mat`` feature files, and the ``features`` dataset.

A feature file holds the (N, D) features of one modality's examples and their (N,) labels, 0-based indices into
the dataset's class list:

* ``<name>.npy`` holds the features and ``<name>_labels.npy`` beside it the labels (plain arrays: neither file is
  ever loaded with pickles allowed);
* ``<name>.mat`` holds the variables ``features`` (N, D) and ``labels`` (N, 1) or (1, N), as the ZSCMR authors'
  feature files did (any MATLAB version; v7.3 through h5py).

The ``features`` dataset (``config.data.name="features"``, ``config.data.root=<folder>``) reads a folder holding
``classes.txt`` (one class name per line, label i on line i + 1), ``sketch.npy`` or ``sketch.mat`` and ``photo.npy``
or ``photo.mat``. Everything else follows the image folders (:mod:`jsbir.data.real`): ``config.data.split`` names
the unseen classes (default: a random 20% with seed 0), each seen class's rows are divided into train and test by
``config.data.test_fraction``, and the class vectors come from ``config.data.semantics`` by class name.
``config.data.feature_dim``, when not 0, is the dimension every file must have.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jsbir.data import matfile, semantics, splits
from jsbir.data.types import PHOTO, SKETCH, DatasetInfo, SbirData, split_modalities

SUFFIXES = (".npy", ".mat")


def labels_path(path: str | Path) -> Path:
    """The labels file beside a ``.npy`` feature file."""
    path = Path(path)
    return path.with_name(f"{path.stem}_labels.npy")


def save_features(path: str | Path, features: np.ndarray, labels: np.ndarray) -> None:
    """Writes a feature file (``.npy`` with its labels file, or ``.mat``), readable by :func:`load_features`."""
    path = Path(path)
    features, labels = np.asarray(features, np.float32), np.asarray(labels, np.int64)
    if path.suffix == ".npy":
        np.save(path, features)
        np.save(labels_path(path), labels)
    elif path.suffix == ".mat":
        import scipy.io

        scipy.io.savemat(path, {"features": features, "labels": labels[:, None]})
    else:
        raise ValueError(f"{path}: feature files are {' or '.join(SUFFIXES)}")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray]:
    if path.suffix == ".npy":
        labels_file = labels_path(path)
        if not labels_file.is_file():
            raise FileNotFoundError(f"{path} has no labels file {labels_file.name} beside it")
        try:
            return np.load(path, allow_pickle=False), np.load(labels_file, allow_pickle=False)
        except ValueError as err:  # a pickled object array, or not an .npy file at all
            raise ValueError(f"cannot read {path} or {labels_file.name} as plain arrays: {err}") from err
    variables = matfile.read_variables(path, ("features", "labels"))
    missing = [name for name in ("features", "labels") if name not in variables]
    if missing:
        raise ValueError(f"{path} has no {' and no '.join(repr(m) for m in missing)} variable")
    return variables["features"], variables["labels"]


def load_features(path: str | Path, num_classes: int | None = None, dim: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Reads a feature file.

    Args:
      path: a ``.npy`` (with its ``_labels.npy``) or ``.mat`` file.
      num_classes: when given, every label must be in ``[0, num_classes)``.
      dim: when not 0, the feature dimension the file must have (``config.data.feature_dim``).

    Returns:
      (features (N, D) float32, labels (N,) int32).

    Raises:
      FileNotFoundError: the file or its labels file is missing.
      ValueError: naming the file: unreadable, labels that do not match the rows, a wrong dimension, labels out of
        range, or non-finite values.
    """
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: feature files are {' or '.join(SUFFIXES)}")
    if not path.is_file():
        raise FileNotFoundError(f"feature file {path} does not exist")
    features, labels = _read(path)
    features, labels = np.asarray(features), np.asarray(labels)
    if features.ndim != 2 or not np.issubdtype(features.dtype, np.number):
        raise ValueError(f"{path}: features must be a numeric (N, D) array, got {features.dtype} {features.shape}")
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    if labels.ndim != 1 or labels.shape[0] != features.shape[0]:
        raise ValueError(
            f"{path}: {labels.size} labels (shape {labels.shape}) for {features.shape[0]} feature rows; there must "
            "be one label per row"
        )
    if not np.issubdtype(labels.dtype, np.number) or not np.array_equal(labels, np.round(labels)):
        raise ValueError(f"{path}: labels must be integers, got {labels.dtype}")
    if dim and features.shape[1] != dim:
        raise ValueError(f"{path}: features are {features.shape[1]}-d but config.data.feature_dim is {dim}")
    if num_classes is not None and len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"{path}: labels span {int(labels.min())}..{int(labels.max())} but there are {num_classes} classes "
            "(labels are 0-based indices into classes.txt)"
        )
    features = features.astype(np.float32)
    if not np.isfinite(features).all():
        raise ValueError(f"{path}: features hold NaN or infinite values")
    return features, labels.astype(np.int32)


def _modality_file(root: Path, modality: str) -> Path:
    found = [root / f"{modality}{suffix}" for suffix in SUFFIXES if (root / f"{modality}{suffix}").is_file()]
    if len(found) != 1:
        what = "neither" if not found else "both"
        raise FileNotFoundError(f"{root} holds {what} of {modality}.npy and {modality}.mat: it needs exactly one")
    return found[0]


def load_dataset(config: Any) -> SbirData:
    """The ``features`` dataset of ``config.root`` (see the module docstring), divided like an image folder."""
    from jsbir.data import real

    if not config.root:
        raise ValueError("config.data.root is empty: point it at a folder of classes.txt, sketch.* and photo.*")
    root = Path(config.root).expanduser()
    classes_file = root / "classes.txt"
    if not classes_file.is_file():
        raise FileNotFoundError(f"{classes_file} does not exist: the features dataset needs its class names")
    names = tuple(splits.parse_class_list(classes_file.read_text(encoding="utf-8")))
    arrays: dict[str, list[np.ndarray]] = {"image": [], "label": [], "modality": [], "instance_id": [], "file_name": []}
    for modality, code in (("sketch", SKETCH), ("photo", PHOTO)):
        features, labels = load_features(_modality_file(root, modality), len(names), config.get("feature_dim", 0))
        rows = np.arange(len(labels))
        arrays["image"].append(features)
        arrays["label"].append(labels)
        arrays["modality"].append(np.full(len(labels), code))
        arrays["instance_id"].append(np.full(len(labels), -1, np.int64))
        arrays["file_name"].append(np.array([f"{modality}:{r}" for r in rows], dtype=object))
    dims = {a.shape[1] for a in arrays["image"]}
    if len(dims) > 1:
        raise ValueError(f"{root}: sketch and photo features must have one dimension, got {sorted(dims)}")
    merged = {k: np.concatenate(v) for k, v in arrays.items()}
    split, unseen = real.unseen_classes(config.split, names, "")
    test = real.divide(merged, names, unseen, config.test_fraction, config.data_seed)
    train = {k: v[~test] for k, v in merged.items() if k != "file_name"}
    held = {k: v[test] for k, v in merged.items() if k != "file_name"}
    info = DatasetInfo(
        name="features",
        split=split,
        class_names=names,
        seen=tuple(i for i in range(len(names)) if i not in set(unseen)),
        unseen=unseen,
        semantics=semantics.class_semantics(config.semantics, names, config.semantics_file),
        image_size=0,
        generalized=bool(config.generalized),
    )
    return SbirData(info, *split_modalities(train), *split_modalities(held))
