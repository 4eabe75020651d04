"""The data types every stage shares: examples in memory and what a model and a report know of a dataset.

Plain numpy and dataclasses, no TensorFlow: models, evaluators and tests import these without starting tf.data.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

PHOTO, SKETCH = 0, 1  # the modality ids of every builder


@dataclasses.dataclass(frozen=True)
class Images:
    """A set of examples of one modality in memory, with their labels.

    Attributes:
      image: (N, H, W, C) uint8 images (a numpy array, or ``jsbir.data.records.RecordImages`` that read their
        rows from the prepared records when asked: index to select rows, ``numpy.asarray`` to read them), or
        (N, D) float32 feature vectors extracted from them.
      label: (N,) int32 class index into ``DatasetInfo.class_names``.
      instance_id: (N,) int64; a sketch and the photo it was drawn from share it (-1 when unknown).
      hard_negatives: optional (N, M) int64 instance ids of photos annotated as hard negatives of each row (a
        sketch), -1 padded; the instance-triplet sampler draws from them.
    """

    image: np.ndarray
    label: np.ndarray
    instance_id: np.ndarray
    hard_negatives: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.label)

    def select(self, keep: np.ndarray) -> Images:
        """The subset where ``keep`` (bool mask or index array) holds."""
        negatives = None if self.hard_negatives is None else self.hard_negatives[keep]
        return Images(self.image[keep], self.label[keep], self.instance_id[keep], negatives)


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
      class_graph: (num_classes, num_classes) bool adjacency of the class graph built from ``semantics``
        (``config.data.graph``), no self loops; set by ``jsbir.data.get_dataset``.
      semantic_distance: (num_classes, num_classes) float32 distances between the class vectors.
      semantics_setting: "inductive" (training may use the seen classes' vectors only: the class graph joins
        seen classes, unseen ones are isolated nodes) or "transductive" (every class's vector, a named option).
      validation: label ids of the seen classes held out of training as pseudo-unseen validation classes
        (``jsbir.data.validation``); empty when validation holds out instances or nothing.
      skipped_files: images left out because they could not be decoded (``config.data.skip_corrupt``).
    """

    name: str
    split: str
    class_names: tuple[str, ...]
    seen: tuple[int, ...]
    unseen: tuple[int, ...]
    semantics: np.ndarray
    image_size: int
    generalized: bool = False
    class_graph: np.ndarray | None = None
    semantic_distance: np.ndarray | None = None
    semantics_setting: str = "inductive"
    validation: tuple[int, ...] = ()
    skipped_files: tuple[str, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def graph_mask(self) -> np.ndarray:
        """(num_classes,) bool: the classes whose vectors training may relate (class graph edges, topology)."""
        if self.semantics_setting == "transductive":
            return np.ones(self.num_classes, bool)
        return self.seen_mask

    @property
    def seen_mask(self) -> np.ndarray:
        """(num_classes,) bool, True for the training classes."""
        mask = np.zeros(self.num_classes, bool)
        mask[list(self.seen)] = True
        return mask


@dataclasses.dataclass(frozen=True)
class SbirData:
    """A dataset in memory: training, test and (optionally) validation examples of both modalities, and its info.

    The validation examples are cut from the training split of seen classes (``jsbir.data.validation``).
    """

    info: DatasetInfo
    train_sketches: Images
    train_photos: Images
    test_sketches: Images
    test_photos: Images
    val_sketches: Images | None = None
    val_photos: Images | None = None

    def training_pairs(self) -> tuple[Images, Images]:
        """Sketches and photos of the seen classes from the training split."""
        seen = np.asarray(self.info.seen)
        return (
            self.train_sketches.select(np.isin(self.train_sketches.label, seen)),
            self.train_photos.select(np.isin(self.train_photos.label, seen)),
        )


def split_modalities(arrays: dict[str, Any]) -> tuple[Images, Images]:
    """Splits a prepared split (``jsbir.data.records.load_split``) into (sketches, photos); images stay unread."""
    modality = np.asarray(arrays["modality"])
    images = Images(
        image=arrays["image"],
        label=np.asarray(arrays["label"]).astype(np.int32),
        instance_id=np.asarray(arrays["instance_id"]).astype(np.int64),
    )
    return images.select(modality == SKETCH), images.select(modality == PHOTO)
