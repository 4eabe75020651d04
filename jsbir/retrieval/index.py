"""The on-disk index: a folder of memory-mappable arrays and a manifest that names the model and every file's SHA-256.

Layout (``FORMAT_VERSION`` 1)::

    manifest.json        format and version, the model (method, model-config SHA-256, checkpoint subdir, step and
                         SHA-256, run folder), the run config, modality, embedding size, views, item count,
                         class names, the codes, and {file: SHA-256} of every file below
    embeddings.npy       (N, D) float32, D = views x the model's embedding size: the test-time views side by side
                         (a dot product is views x the evaluator's score; see jsbir.retrieval.encoder)
    labels.npy           (N,) int32 index into the manifest's class names, -1 when unknown
    paths.json           each item's image file: absolute, or relative to the index folder
    codes_itq.npy        (N, ceil(bits / 8)) uint8 packed ITQ codes of the first view's embedding
    itq_mean.npy, itq_projection.npy, itq_rotation.npy
                         the ITQ fitted once, at indexing (queries are encoded with it)
    codes_hash.npy       (N, ceil(bits / 8)) uint8 packed codes of the method's own, when it learns them
    images/              the images of an index built from a dataset split (PNG), which has no files of its own

An index is written into a temporary folder beside its destination and renamed into place, so a killed indexing
leaves no half index; :func:`open_index` refuses a missing, changed or foreign file, naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from typing import Any

import numpy as np

from jsbir.data.features import file_sha256
from jsbir.metrics import ItqModel

FORMAT = "jsbir-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
EMBEDDINGS, LABELS, PATHS = "embeddings.npy", "labels.npy", "paths.json"
CODE_FILES = {"itq": "codes_itq.npy", "hash": "codes_hash.npy"}
ITQ_FILES = {"mean": "itq_mean.npy", "projection": "itq_projection.npy", "rotation": "itq_rotation.npy"}
IMAGES = "images"


class BadIndexError(ValueError):
    """An index folder that cannot be used; the message names the folder and the file or key at fault."""


class Index:
    """An opened index: the manifest, and the arrays as read-only memory maps.

    Attributes:
      folder: the index folder (absolute).
      manifest: the parsed manifest.
      embeddings: (N, D) float32 memory map.
      labels: (N,) int32.
      paths: N strings, as stored (absolute, or relative to ``folder``).
      class_names: the class names ``labels`` index.
    """

    def __init__(self, folder: str, manifest: dict[str, Any]):
        self.folder, self.manifest = folder, manifest
        self.embeddings = np.load(os.path.join(folder, EMBEDDINGS), mmap_mode="r")
        self.labels = np.load(os.path.join(folder, LABELS))
        with open(os.path.join(folder, PATHS), encoding="utf-8") as f:
            self.paths = json.load(f)
        self.class_names = list(manifest["class_names"])

    def __len__(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["embedding_dim"])

    def code_bits(self, name: str) -> int:
        """Bits of the codes ``name`` ("itq" or "hash").

        Raises:
          BadIndexError: the index holds no such codes.
        """
        codes = self.manifest["codes"]
        if name not in codes:
            raise BadIndexError(f"index {self.folder} holds no {name!r} codes (it has: {sorted(codes)})")
        return int(codes[name]["bits"])

    def codes(self, name: str) -> np.ndarray:
        """(N, ceil(bits / 8)) uint8 packed codes ``name`` as a memory map."""
        self.code_bits(name)
        return np.load(os.path.join(self.folder, CODE_FILES[name]), mmap_mode="r")

    def itq(self) -> ItqModel:
        """The ITQ fitted at indexing; it encodes the first view of a query embedding (see :meth:`itq_input`)."""
        arrays = {k: np.load(os.path.join(self.folder, f)) for k, f in ITQ_FILES.items()}
        return ItqModel(losses=[], **arrays)

    def itq_input(self, embeddings: np.ndarray) -> np.ndarray:
        """The first view's embedding: the first D of the views * D columns of index embeddings."""
        return np.asarray(embeddings[:, : self.dim // int(self.manifest["views"])], np.float64)

    def image_path(self, item: int) -> str:
        """The image file of item ``item``, absolute."""
        path = self.paths[item]
        return path if os.path.isabs(path) else os.path.join(self.folder, path)


def _read_manifest(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, MANIFEST)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"no index at {folder}: the folder does not exist")
    if not os.path.isfile(path):
        raise BadIndexError(f"{folder} is not an index: it has no {MANIFEST}")
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as e:
        raise BadIndexError(f"{path} is unreadable: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BadIndexError(f"{path} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise BadIndexError(f"{path}: format version {manifest.get('version')!r}; this jsbir reads {FORMAT_VERSION}")
    for key in ("model", "config", "count", "embedding_dim", "views", "class_names", "codes", "files"):
        if key not in manifest:
            raise BadIndexError(f"{path} has no {key!r} key")
    return manifest


def verify_files(folder: str, manifest: dict[str, Any]) -> None:
    """Checks every file the manifest lists against its SHA-256.

    Raises:
      BadIndexError: a file is missing or changed (named).
    """
    for name, expected in sorted(manifest["files"].items()):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise BadIndexError(f"index {folder}: {name} is missing")
        if file_sha256(path) != expected:
            raise BadIndexError(f"index {folder}: {name} has changed since indexing (its SHA-256 differs)")


def open_index(folder: str | os.PathLike, verify: bool = True) -> Index:
    """Opens an index folder.

    Args:
      folder: the folder ``python -m jsbir.main index`` wrote.
      verify: check every file's SHA-256 against the manifest first (reads the whole index once).

    Raises:
      FileNotFoundError: no such folder.
      BadIndexError: no or an unreadable manifest, another format version, a missing or changed file, or arrays
        that disagree with the manifest (each named).
    """
    folder = os.path.abspath(os.fspath(folder))
    manifest = _read_manifest(folder)
    if verify:
        verify_files(folder, manifest)
    index = Index(folder, manifest)
    count, dim = len(index), index.dim
    shapes = {EMBEDDINGS: (index.embeddings.shape, (count, dim)), LABELS: (index.labels.shape, (count,)),
              PATHS: ((len(index.paths),), (count,))}  # fmt: skip
    for name, (found, expected) in shapes.items():
        if tuple(found) != expected:
            raise BadIndexError(f"index {folder}: {name} has shape {tuple(found)}, the manifest says {expected}")
    return index


def check_same_model(found: dict[str, Any], expected: dict[str, Any], what: str) -> None:
    """Refuses two model fingerprints (``Encoder.fingerprint``) that differ, naming the differing keys (where the
    run folder is, and whether its checkpoint was the best or the latest, do not matter).

    Raises:
      BadIndexError: naming ``what`` and each difference (method, model config, checkpoint step or SHA-256).
    """
    flat = {}
    for source, record in (("found", found), ("expected", expected)):
        for key, value in record.items():
            for sub, v in value.items() if isinstance(value, dict) else [(None, value)]:
                flat.setdefault(f"{key}.{sub}" if sub else key, {})[source] = v
    differ = [f"{k}: {v.get('found')!r} vs {v.get('expected')!r}" for k, v in sorted(flat.items())
              if k not in ("workdir", "checkpoint.subdir") and v.get("found") != v.get("expected")]  # fmt: skip
    if differ:
        raise BadIndexError(f"{what} was made by another model ({'; '.join(differ)})")


class IndexWriter:
    """Writes an index into a temporary folder beside ``folder`` and renames it into place on :meth:`commit`.

    Use as a context manager: leaving the block without a commit (an error, Ctrl-C) removes the temporary folder.

    Args:
      folder: the destination.
      overwrite: replace an existing destination (only once the new index is complete).

    Raises:
      FileExistsError: ``folder`` exists and ``overwrite`` is False.
      FileNotFoundError: its parent folder does not exist.
    """

    def __init__(self, folder: str | os.PathLike, overwrite: bool = False):
        self.folder = os.path.abspath(os.fspath(folder))
        self.overwrite = overwrite
        if os.path.exists(self.folder) and not overwrite:
            raise FileExistsError(f"{self.folder} already exists; choose another --out or pass --overwrite")
        parent = os.path.dirname(self.folder)
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"the parent folder of {self.folder} does not exist")
        self.tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(self.folder)}.tmp-", dir=parent)

    def __enter__(self) -> IndexWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        if os.path.isdir(self.tmp):
            shutil.rmtree(self.tmp)

    def path(self, name: str) -> str:
        """Where file ``name`` goes in the temporary folder."""
        return os.path.join(self.tmp, name)

    def array(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable ``.npy`` memory map ``name`` in the temporary folder."""
        return np.lib.format.open_memmap(self.path(name), mode="w+", dtype=dtype, shape=shape)

    def save(self, name: str, value: Any) -> None:
        """Writes an array (``.npy``) or a JSON value (``.json``)."""
        if name.endswith(".json"):
            with open(self.path(name), "w", encoding="utf-8") as f:
                json.dump(value, f)
        else:
            np.save(self.path(name), value)

    def commit(self, manifest: dict[str, Any], files: list[str]) -> Index:
        """Records the SHA-256 of ``files``, writes the manifest and renames the folder into place.

        Returns:
          The index, opened from its final place.
        """
        manifest = {"format": FORMAT, "version": FORMAT_VERSION, **manifest,
                    "files": {name: file_sha256(self.path(name)) for name in sorted(files)}}  # fmt: skip
        with open(self.path(MANIFEST), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
        old = None
        if os.path.exists(self.folder):
            old = tempfile.mkdtemp(prefix=f".{os.path.basename(self.folder)}.old-", dir=os.path.dirname(self.folder))
            os.replace(self.folder, os.path.join(old, "index"))
        os.replace(self.tmp, self.folder)
        if old is not None:
            shutil.rmtree(old)
        return open_index(self.folder, verify=False)
