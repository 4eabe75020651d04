"""Prepared tensorflow-datasets records: where they live, and how a split is read back without loading its images.

The builders write ArrayRecord files (``FILE_FORMAT``), which allow random access. :func:`load_split` reads a split's
small fields (labels, modalities, instance ids, file names) into numpy and leaves every image in the records as a
:class:`RecordImages`, read row by row when a batch needs it. So host memory holds the rows in use (the tf.data
buffers, one evaluation batch), never a whole dataset, whatever its size.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np

FILE_FORMAT = "array_record"  # random access: a training example reads its own rows
_READ_CHUNK = 1024  # records deserialised per call while reading a split's small fields
_DECODERS = 4  # threads decoding PNG rows for numpy.asarray (PIL releases the GIL)


def tfds_data_dir(config: Any) -> str:
    """The tensorflow-datasets folder: ``config.data_dir``, else tfds' default (``~/tensorflow_datasets``)."""
    import tensorflow_datasets as tfds

    return os.path.expanduser(config.data_dir or tfds.core.constants.DATA_DIR)


def _decode_png(data: bytes) -> np.ndarray:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        array = np.asarray(image)
    return array[..., None] if array.ndim == 2 else array


class RecordImages:
    """(N, H, W, C) uint8 images that stay in their prepared records until a batch reads them.

    Behaves as the array it stands for where the data layer needs it: ``len``, ``shape``, ``ndim``, ``dtype``;
    indexing with a slice, an integer array or a boolean mask *selects* rows and returns another ``RecordImages``
    (nothing is read); an integer reads that one image, a tuple (rows, then pixels) reads the selected rows and
    indexes their pixels; ``numpy.asarray`` reads and decodes the selected rows;
    :meth:`encoded` gives one row's stored PNG bytes, for decoding inside tf.data.

    Args:
      source: a tfds random-access source of the split whose examples carry the undecoded ``"image"`` bytes.
      rows: the split's record index of each row.
      image_shape: (H, W, C) of one image.
      origin: identifies the prepared records (their folder, files, sizes and times); with ``rows`` it names the
        content (:meth:`fingerprint`), since prepared records are written once and never changed.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, source: Any, rows: np.ndarray, image_shape: tuple[int, ...], origin: str):
        self._source, self._rows, self._origin = source, np.asarray(rows, np.int64), origin
        self.shape = (len(self._rows), *image_shape)

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, key: Any) -> RecordImages | np.ndarray:
        if isinstance(key, tuple):
            rows, pixels = key[0], key[1:]
            if isinstance(rows, (int, np.integer)):
                return self[rows][pixels]
            return np.asarray(self[rows])[(slice(None), *pixels)]
        if isinstance(key, (int, np.integer)):
            return _decode_png(self.encoded(key))
        return RecordImages(self._source, self._rows[key], self.shape[1:], self._origin)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        del copy  # always a new array
        out = np.empty(self.shape, np.uint8)
        records = self._source.__getitems__(self._rows.tolist()) if len(self) else []
        with concurrent.futures.ThreadPoolExecutor(_DECODERS) as pool:
            for i, image in enumerate(pool.map(_decode_png, (r["image"] for r in records))):
                out[i] = image
        return out if dtype is None else out.astype(dtype)

    def encoded(self, row: int) -> bytes:
        """Row ``row``'s image as stored (PNG bytes)."""
        return self._source[int(self._rows[row])]["image"]

    def fingerprint(self) -> str:
        """SHA-256 naming these rows of these prepared records (a cache key for data derived from the pixels)."""
        digest = hashlib.sha256(f"{self._origin}|{self.shape[1:]}".encode())
        digest.update(self._rows.tobytes())
        return digest.hexdigest()


def _origin(folder: Path) -> str:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    return "|".join([str(folder.resolve())] + [f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files])


def load_split(builder: Any, split: str) -> dict[str, Any]:
    """A prepared builder's split: its small fields as numpy arrays, and ``"image"`` as :class:`RecordImages`.

    Raises:
      ValueError: the split was prepared in a format without random access (an older preparation), naming the
        folder to delete.
    """
    import tensorflow_datasets as tfds

    folder = Path(builder.data_dir)
    found = builder.info.file_format.value if builder.info.file_format else "unknown"
    if found != FILE_FORMAT:
        raise ValueError(f"{folder} holds {found} records, not {FILE_FORMAT}: delete it to rebuild")
    source = builder.as_data_source(split=split, decoders={"image": tfds.decode.SkipDecoding()})
    fields: dict[str, list] = {key: [] for key in builder.info.features if key != "image"}
    for begin in range(0, len(source), _READ_CHUNK):
        for example in source.__getitems__(list(range(begin, min(begin + _READ_CHUNK, len(source))))):
            for key, value in example.items():
                if key != "image":
                    fields[key].append(value)
    arrays: dict[str, Any] = {key: np.asarray(values) for key, values in fields.items()}
    shape = tuple(builder.info.features["image"].shape)
    arrays["image"] = RecordImages(source, np.arange(len(source)), shape, _origin(folder))
    return arrays


def class_ids(class_names: tuple[str, ...], names: tuple[str, ...], source: str) -> tuple[int, ...]:
    """Label ids of ``names``; a name the dataset lacks is an error naming it and ``source``."""
    index = {name: i for i, name in enumerate(class_names)}
    missing = [n for n in names if n not in index]
    if missing:
        raise ValueError(f"{source}: classes {missing} are not in the dataset")
    return tuple(sorted(index[n] for n in names))
