"""What every manual-folder builder shares: the catalogue of items, image decoding, pairing, and a safe prepare.

A dataset family (``sketchy``, ``tuberlin``, ``quickdraw``, ``quickdraw_raw``, ``qmul``) subclasses
:class:`ManualSbirBuilder` and implements one method, ``scan(root)``, that lists its classes and its
:class:`Item` s without decoding anything. This module then

* validates the listing (layout errors name the folders that were expected, an empty class folder names itself),
* gives instance ids: every photo with a ``pair`` key gets a unique id (its index in the sorted keys), and a sketch
  whose ``pair`` key is a photo's takes that photo's id; everything else is -1,
* decodes each image with PIL (alpha composited on white, converted to RGB, resized to ``size`` x ``size`` with
  PIL's antialiased bilinear filter, so non-square images are squashed as the field's loaders do) in a small thread
  pool, keeping the order,
* and writes tfds examples ``{image, label, modality, instance_id, file_name}``.

Prepared data go to ``data_dir/<builder name>/<config name>/1.1.0`` as ArrayRecord files (random access, read
by :mod:`jsbir.data.records`): tfds writes into an ``incomplete.*`` folder
and renames it only on success, and :func:`prepare` removes every folder it created when preparing fails, so an
error leaves nothing behind. The root a dataset was prepared from is kept in the prepared folder's
``metadata.json``; asking for the same dataset and config from another root is an error (prepared data are never
silently taken for another collection), except for the ``folder`` dataset, whose prepared folders are keyed by
their root (:func:`root_key`), so several collections share one data folder. Delete the prepared folder to rebuild
after changing the files.
Processes sharing a data folder (the hosts of a multi-host run) prepare one at a time (:func:`prepare_lock`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds
from absl import logging
from etils import epath
from PIL import Image

from jsbir.data import records
from jsbir.data.builders.images import CorruptImageError, to_rgb
from jsbir.data.types import PHOTO, SKETCH

MODALITIES = ("photo", "sketch")  # the ids of the synthetic builder: photo=0, sketch=1
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
DATA_VERSION = "1.1.0"  # 1.1.0: ArrayRecord files (random access), was TFRecord
_DECODE_CHUNK = 256  # images decoded ahead of the writer, in a thread pool (PIL releases the GIL)
# A sketch named after its photo plus "-k" (Sketchy) or "_k" (QMUL-Shoe-V2) pairs with that photo.
_PAIR_SUFFIX = re.compile(r"^(.*)[-_]\d+$")


class LayoutError(ValueError):
    """The root does not hold the expected folders or files."""


@dataclasses.dataclass(frozen=True)
class Item:
    """One image to write, listed by ``scan`` before any decoding.

    Attributes:
      name: where it comes from, relative to the root (``sketch/cat/1.png``, ``shoes_sketch_db_train.mat[3]``);
        unique, used as the tfds key, stored as ``file_name`` and named in errors.
      class_name: its class.
      modality: PHOTO or SKETCH.
      split: the tfds split it goes to.
      source: a file to decode, or a function returning the image (uint8 array or PIL image).
      pair: key shared by a sketch and its photo ("" when the dataset has no pairing).
    """

    name: str
    class_name: str
    modality: int
    split: str
    source: Path | Callable[[], np.ndarray | Image.Image]
    pair: str = ""


@dataclasses.dataclass(eq=False)
class ManualConfig(tfds.core.BuilderConfig):
    """Root-independent choices: the image side in pixels.

    Attributes:
      size: images are resized to size x size, 16..512.
    """

    size: int = 64


def make_config(size: int = 64) -> ManualConfig:
    """A config named ``s<size>``."""
    if not 16 <= size <= 512:
        raise ValueError(f"image size must be in [16, 512], got {size}")
    return ManualConfig(name=f"s{size}", description=f"{size}x{size} RGB images", size=size)


# --------------------------------------------------------------------------------------------- folder helpers


def find_folder(root: Path, candidates: Sequence[str], what: str, dataset: str) -> Path:
    """The first of ``candidates`` (relative to root) that is a folder; else a LayoutError naming them all."""
    for rel in candidates:
        if (root / rel).is_dir():
            return root / rel
    present = sorted(p.name for p in root.iterdir())[:12] if root.is_dir() else []
    raise LayoutError(
        f"{root} is not a {dataset} folder: expected the {what} in one of "
        f"{', '.join(f'{c}/<class>/' for c in candidates)}; found {present}"
    )


def class_folders(folder: Path) -> dict[str, Path]:
    """Visible sub-folders of ``folder`` by name."""
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def image_files(folder: Path) -> list[Path]:
    """Sorted visible image files of a class folder; a folder without any is a LayoutError naming it."""
    files = [
        p
        for p in sorted(folder.iterdir())
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise LayoutError(f"class folder {folder} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return files


def sketch_photo_items(
    root: Path, sketch_dir: Path, photo_dir: Path, *, paired: bool, split: str = "full"
) -> tuple[tuple[str, ...], list[Item]]:
    """Items of a ``<sketch_dir>/<class>/*`` + ``<photo_dir>/<class>/*`` layout; classes sorted by name.

    Args:
      root: the dataset root (item names are relative to it).
      sketch_dir: folder of sketch class folders.
      photo_dir: folder of photo class folders.
      paired: whether a sketch named ``<photo stem>`` or ``<photo stem>[-_]<k>`` pairs with that photo.
      split: the tfds split of every item.

    Raises:
      LayoutError: a class folder on one side only, no class folders, or an empty class folder.
    """
    sketches = class_folders(sketch_dir)
    photos = class_folders(photo_dir)
    if not sketches:
        raise LayoutError(f"{sketch_dir} holds no class folders")
    for have, lack, where in ((sketches, photos, photo_dir), (photos, sketches, sketch_dir)):
        missing = sorted(set(have) - set(lack))
        if missing:
            raise LayoutError(f"classes {missing[:10]} have no folder in {where}")
    items = []
    for name in sorted(sketches):
        stems = {}
        for path in image_files(photos[name]):
            stems.setdefault(path.stem, f"{name}/{path.stem}")
            pair = f"{name}/{path.stem}" if paired else ""
            items.append(Item(relative(path, root), name, PHOTO, split, path, pair))
        for path in image_files(sketches[name]):
            pair = pair_key(path.stem, stems) if paired else ""
            items.append(Item(relative(path, root), name, SKETCH, split, path, pair))
    return tuple(sorted(sketches)), items


def pair_key(stem: str, photo_keys: dict[str, str]) -> str:
    """The key of the photo a sketch named ``stem`` was drawn from: the same stem, else the stem without a
    trailing ``-k`` / ``_k``; "" when neither names a photo."""
    if stem in photo_keys:
        return photo_keys[stem]
    match = _PAIR_SUFFIX.match(stem)
    return photo_keys.get(match.group(1), "") if match else ""


def relative(path: Path, root: Path) -> str:
    """``path`` relative to ``root``, with forward slashes."""
    return path.relative_to(root).as_posix()


# --------------------------------------------------------------------------------------------- images


def decode(item: Item, size: int) -> np.ndarray:
    """The item's image at ``size``; CorruptImageError naming the file when it cannot be decoded."""
    try:
        if isinstance(item.source, Path):
            with Image.open(item.source) as image:
                return to_rgb(image, size)
        return to_rgb(item.source(), size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        where = item.source if isinstance(item.source, Path) else item.name
        raise CorruptImageError(f"cannot decode image {where}: {err}") from err


# --------------------------------------------------------------------------------------------- the builder


class ManualSbirBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Base of the manual-folder SBIR builders; subclasses implement :meth:`scan`.

    Args (keyword, besides tfds' own ``config`` and ``data_dir``):
      root: the manual folder.
      skip_corrupt: skip (and log) images that cannot be decoded instead of failing.
    """

    VERSION = tfds.core.Version(DATA_VERSION)
    RELEASE_NOTES = {"1.0.0": "Initial release.", DATA_VERSION: "ArrayRecord files, read by random access."}
    BUILDER_CONFIGS: list = []  # any size is a custom config: nothing to list
    SPLITS: tuple[str, ...] = ("full",)
    code_path = epath.Path(__file__)  # see synthetic_sbir: tfds' own lookup needs importlib_resources
    # A user's own collections (the ``folder`` dataset) are many: each root gets its own prepared folder. A named
    # dataset has one root, and a second root is refused as a likely mistake.
    KEYED_BY_ROOT = False

    def __init__(self, *, root: str | os.PathLike, skip_corrupt: bool = False, **kwargs):
        self._root = Path(root).expanduser().resolve()
        self._skip_corrupt = skip_corrupt
        self._catalogue: tuple[tuple[str, ...], list[Item], np.ndarray] | None = None
        super().__init__(**kwargs)

    def scan(self, root: Path) -> tuple[tuple[str, ...], list[Item]]:
        """Lists (class names in label order, items) without decoding; raises LayoutError on a wrong layout."""
        raise NotImplementedError

    def catalogue(self) -> tuple[tuple[str, ...], list[Item], np.ndarray]:
        """(class names, items, instance ids), scanned once."""
        if self._catalogue is None:
            if not self._root.is_dir():
                raise FileNotFoundError(f"{self.name}: root folder {self._root} does not exist")
            names, items = self.scan(self._root)
            if not items:
                raise LayoutError(f"{self._root} holds no images for {self.name}")
            self._catalogue = (tuple(names), items, instance_ids(items))
        return self._catalogue

    def _info(self) -> tfds.core.DatasetInfo:
        names, _, _ = self.catalogue()
        size = self.builder_config.size
        return tfds.core.DatasetInfo(
            builder=self,
            description=(type(self).__doc__ or "").split("\n\n")[0],
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "label": tfds.features.ClassLabel(names=list(names)),
                    "modality": tfds.features.ClassLabel(names=list(MODALITIES)),
                    "instance_id": tfds.features.Scalar(
                        dtype=np.int64, doc="shared by a sketch and the photo it was drawn from; -1 when unknown"
                    ),
                    "file_name": tfds.features.Text(doc="where the image came from, relative to the root"),
                }
            ),
            supervised_keys=("image", "label"),
            metadata=tfds.core.MetadataDict(root=str(self._root), skipped=[]),
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # the root was given to the constructor (tfds' manual_dir is set to it too)
        return {split: self._generate_examples(split) for split in self.SPLITS}

    def _generate_examples(self, split: str) -> Iterator[tuple[str, dict]]:
        names, items, ids = self.catalogue()
        label = {n: i for i, n in enumerate(names)}
        chosen = [(item, int(i)) for item, i in zip(items, ids, strict=True) if item.split == split]
        size = self.builder_config.size
        skipped = self.info.metadata["skipped"]
        with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            for start in range(0, len(chosen), _DECODE_CHUNK):
                chunk = chosen[start : start + _DECODE_CHUNK]
                futures = [pool.submit(decode, item, size) for item, _ in chunk]
                for (item, instance), future in zip(chunk, futures, strict=True):
                    try:
                        image = future.result()
                    except CorruptImageError as err:
                        if not self._skip_corrupt:
                            raise
                        skipped.append(item.name)
                        logging.warning("skipping corrupt image (skip_corrupt=True): %s", err)
                        continue
                    yield (
                        item.name,
                        {
                            "image": image,
                            "label": label[item.class_name],
                            "modality": item.modality,
                            "instance_id": instance,
                            "file_name": item.name,
                        },
                    )
        if skipped:
            logging.warning("%s: skipped %d corrupt images so far (split %s)", self.name, len(skipped), split)


def instance_ids(items: Sequence[Item]) -> np.ndarray:
    """Every photo with a pair key gets a unique id (index in the sorted keys); a sketch gets its photo's id."""
    keys = sorted({item.pair for item in items if item.modality == PHOTO and item.pair})
    index = {key: i for i, key in enumerate(keys)}
    ids = np.full(len(items), -1, np.int64)
    seen_photo: set[str] = set()
    extra = len(keys)
    for n, item in enumerate(items):
        if not item.pair or item.pair not in index:
            continue
        if item.modality == PHOTO:
            if item.pair in seen_photo:  # two photos with one stem (a.jpg, a.png): the second gets its own id
                ids[n], extra = extra, extra + 1
                continue
            seen_photo.add(item.pair)
        ids[n] = index[item.pair]
    return ids


# --------------------------------------------------------------------------------------------- prepare


def prepare(
    builder_cls: type[ManualSbirBuilder],
    root: str | os.PathLike,
    data_dir: str | os.PathLike,
    config: tfds.core.BuilderConfig,
    *,
    skip_corrupt: bool = False,
) -> tfds.core.DatasetBuilder:
    """Builds (or reuses) a manual dataset under ``data_dir``, offline, leaving nothing behind on failure.

    Args:
      builder_cls: the family's builder class.
      root: the manual folder (``config.data.root``).
      data_dir: tfds data directory.
      config: the builder config (image size and other root-independent choices).
      skip_corrupt: skip undecodable images (logged, listed in the metadata) instead of failing.

    Returns:
      A builder on the prepared data; read a split with ``records.load_split``.

    Raises:
      FileNotFoundError: the root does not exist.
      LayoutError: the root holds the wrong layout, or the data were prepared from another root.
      CorruptImageError: an undecodable image (unless ``skip_corrupt``).
    """
    root_path = Path(root).expanduser().resolve()
    data_dir = Path(data_dir).expanduser()
    if builder_cls.KEYED_BY_ROOT:
        config = dataclasses.replace(config, name=f"{config.name}_{root_key(root_path)}")
    if skip_corrupt:  # skipping changes the content, so it never shares a folder with a complete preparation
        config = dataclasses.replace(config, name=f"{config.name}_skipcorrupt")
    prepared = data_dir / builder_cls.name / config.name / DATA_VERSION
    with prepare_lock(data_dir):
        remove_incomplete(prepared.parent)
        if (prepared / "dataset_info.json").is_file():
            source = json.loads((prepared / "metadata.json").read_text()).get("root", "")
            if source != str(root_path):
                raise LayoutError(
                    f"{prepared} was prepared from {source}, not from {root_path}: point config.data.data_dir "
                    f"elsewhere, or delete {prepared} to rebuild from the new root"
                )
            return tfds.builder_from_directory(os.fspath(prepared))
        if not str(root) or not root_path.is_dir():
            raise FileNotFoundError(
                f"{builder_cls.name}: root folder {str(root)!r} does not exist (set config.data.root).\n"
                f"{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}"
            )
        shared = [p for p in (data_dir, data_dir / "downloads") if not p.exists()]
        owned = [p for p in (prepared.parents[1], prepared.parent) if not p.exists()]
        try:
            builder = builder_cls(
                root=root_path,
                skip_corrupt=skip_corrupt,
                config=config,
                data_dir=os.fspath(data_dir),
                file_format=records.FILE_FORMAT,
            )
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False, manual_dir=os.fspath(root_path))
            )
        except BaseException:
            _remove(prepared, owned, shared)
            raise
        return builder


def root_key(root: Path) -> str:
    """The part of a prepared folder's name that tells one root from another: the basename (for a reader) and 10
    hex digits of the SHA-256 of the resolved path."""
    digest = hashlib.sha256(str(root).encode()).hexdigest()[:10]
    return f"{re.sub(r'[^A-Za-z0-9]+', '', root.name)[:24]}{digest}"


@contextlib.contextmanager
def prepare_lock(data_dir: str | os.PathLike) -> Iterator[None]:
    """Holds an exclusive ``fcntl.flock`` on ``.<name>.lock`` next to the tfds folder ``data_dir`` while a dataset
    there is checked or prepared, so processes sharing it (the hosts of a multi-host run) never write it at once:
    one prepares, the others wait and then reuse its records (without it, one's ``remove_incomplete`` deletes the
    folder another is writing). Linux maps ``flock`` to byte-range locks on NFS, so hosts sharing a mount wait too.

    The file is removed on release; a waiter that then holds a removed or replaced file locks the new one instead.
    """
    data_dir = Path(data_dir).expanduser().absolute()
    path = data_dir.parent / f".{data_dir.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        handle = open(path, "a")  # noqa: SIM115 - closed on release below
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(handle.fileno()), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        handle.close()
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # before unlocking: nobody can then lock a file that is about to go
        handle.close()


def remove_incomplete(folder: Path) -> None:
    """Deletes the ``incomplete.*`` folders a killed preparation left in ``folder`` (tfds writes into one and
    renames it only on success), saying so."""
    if folder.is_dir():
        for stale in folder.glob("incomplete.*"):
            logging.warning("removing %s, left by an interrupted preparation", stale)
            shutil.rmtree(stale, ignore_errors=True)


def _remove(prepared: Path, owned: list[Path], shared: list[Path]) -> None:
    """Deletes what a failed prepare left: incomplete folders, the dataset folders it created, and the shared
    folders it created (``data_dir``, ``downloads``) when they are empty."""
    remove_incomplete(prepared.parent)
    for path in owned:
        shutil.rmtree(path, ignore_errors=True)
    for path in reversed(shared):  # downloads before data_dir
        if path.is_dir():
            for folder, _, _ in sorted(os.walk(path), key=lambda w: len(w[0]), reverse=True):
                if not any(os.scandir(folder)):  # empty folders only: never a file someone else wrote
                    os.rmdir(folder)
