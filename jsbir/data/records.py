"""Prepared tensorflow-datasets records: where they live and how a split is read back."""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def tfds_data_dir(config: Any) -> str:
    """The tensorflow-datasets folder: ``config.data_dir``, else tfds' default (``~/tensorflow_datasets``)."""
    import tensorflow_datasets as tfds

    return os.path.expanduser(config.data_dir or tfds.core.constants.DATA_DIR)


def load_split(builder: Any, split: str) -> dict[str, np.ndarray]:
    """A prepared builder's whole split as numpy arrays (the sets fit in host memory)."""
    import tensorflow_datasets as tfds

    return tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, shuffle_files=False))


def class_ids(class_names: tuple[str, ...], names: tuple[str, ...], source: str) -> tuple[int, ...]:
    """Label ids of ``names``; a name the dataset lacks is an error naming it and ``source``."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"{source}: classes {missing} are not in the dataset")
    return tuple(sorted(index[n] for n in names))
