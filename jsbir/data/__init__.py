"""Datasets by name: ``get_dataset(config.data)`` returns images in memory plus the zero-shot split.

Each dataset is a function registered in ``DATASETS``; it returns an :class:`SbirData` whose ``info`` says which
classes are seen (trained on) and unseen (queried at test time) and carries the class side information.
``synthetic`` is rendered procedurally; ``sketchy``, ``folder``, ``tuberlin``, ``quickdraw``, ``quickdraw_raw``,
``qmul_v1`` and ``qmul_v2`` read the user's folder ``config.root`` (see :mod:`jsbir.data.real`).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from typing import Any

import numpy as np

from jsbir.data.pipeline import Images

PHOTO, SKETCH = 0, 1  # the modality ids of every builder


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model and a report need to know about a dataset and its split.

    Attributes:
      name: dataset name.
      split: name of the zero-shot split (reported with every number).
      class_names: all classes, in label order.
      seen: sorted label ids trained on.
      unseen: sorted label ids evaluated (zero-shot).
      semantics: (num_classes, F) float32 class side information, row i for class i.
      image_size: side of the square images.
      generalized: whether the gallery also holds seen-class photos.
    """

    name: str
    split: str
    class_names: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    semantics: np.ndarray
    image_size: int
    generalized: bool = False

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class SbirData:
    """A dataset in memory: training and test images of both modalities, and its info."""

    info: DatasetInfo
    train_sketches: Images
    train_photos: Images
    test_sketches: Images
    test_photos: Images

    def training_pairs(self) -> tuple[Images, Images]:
        """Sketches and photos of the seen classes from the training split."""
        seen = np.asarray(self.info.seen)
        return (
            self.train_sketches.select(np.isin(self.train_sketches.label, seen)),
            self.train_photos.select(np.isin(self.train_photos.label, seen)),
        )

    def evaluation_sets(self) -> tuple[Images, Images]:
        """Queries (unseen-class test sketches) and gallery (unseen-class test photos, plus the seen-class
        test photos in generalized mode)."""
        unseen = np.asarray(self.info.unseen)
        queries = self.test_sketches.select(np.isin(self.test_sketches.label, unseen))
        if self.info.generalized:
            gallery = self.test_photos
        else:
            gallery = self.test_photos.select(np.isin(self.test_photos.label, unseen))
        if not len(queries) or not len(gallery):
            raise ValueError(
                f"dataset {self.info.name!r} split {self.info.split!r} has {len(queries)} query "
                f"sketches and {len(gallery)} gallery photos in its unseen classes"
            )
        return queries, gallery


def split_modalities(arrays: dict[str, np.ndarray]) -> tuple[Images, Images]:
    """Splits a tfds split loaded with ``batch_size=-1`` into (sketches, photos)."""
    modality = np.asarray(arrays["modality"])
    images = Images(
        image=np.asarray(arrays["image"]),
        label=np.asarray(arrays["label"]).astype(np.int32),
        instance_id=np.asarray(arrays["instance_id"]).astype(np.int64),
    )
    return images.select(modality == SKETCH), images.select(modality == PHOTO)


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


def _synthetic(config: Any) -> SbirData:
    from jsbir.data import synthetic
    from jsbir.data.builders import synthetic_sbir

    if config.split not in ("default", "synthetic"):
        raise ValueError(
            f"config.data.split={config.split!r}: the synthetic set has one split, 'default'"
        )
    builder = synthetic_sbir.prepare(
        tfds_data_dir(config),
        synthetic_sbir.make_config(
            size=config.image_size,
            train_per_class=config.train_per_class,
            test_per_class=config.test_per_class,
            seed=config.data_seed,
        ),
    )
    names = tuple(synthetic.CLASS_NAMES)
    unseen = class_ids(names, tuple(synthetic.UNSEEN_CLASSES), "synthetic split")
    train_sketches, train_photos = split_modalities(load_split(builder, "train"))
    test_sketches, test_photos = split_modalities(load_split(builder, "test"))
    info = DatasetInfo(
        name="synthetic",
        split="default",
        class_names=names,
        seen=tuple(i for i in range(len(names)) if i not in unseen),
        unseen=unseen,
        semantics=np.asarray(synthetic.side_information(), np.float32),
        image_size=config.image_size,
        generalized=bool(config.generalized),
    )
    return SbirData(info, train_sketches, train_photos, test_sketches, test_photos)


def _real(name: str) -> Callable[[Any], SbirData]:
    """A loader of `jsbir.data.real`, imported on first use (it pulls in the builders)."""

    def load(config: Any) -> SbirData:
        from jsbir.data import real

        return real.LOADERS[name](config)

    load.__name__ = load.__qualname__ = f"_{name}"
    return load


# Real datasets read a manual folder (config.root); see jsbir.data.real for their splits and jsbir.data.builders.
_REAL = ("sketchy", "folder", "tuberlin", "quickdraw", "quickdraw_raw", "qmul_v1", "qmul_v2")
DATASETS: dict[str, Callable[[Any], SbirData]] = {"synthetic": _synthetic, **{n: _real(n) for n in _REAL}}


def get_dataset(config: Any) -> SbirData:
    """Loads the dataset named by ``config.name`` (the ``config.data`` section).

    Raises:
      ValueError: for an unknown name, naming the known ones.
    """
    if config.name not in DATASETS:
        raise ValueError(f"config.data.name={config.name!r} is not one of {sorted(DATASETS)}")
    return DATASETS[config.name](config)
