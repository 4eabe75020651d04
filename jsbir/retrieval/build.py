"""Building an index: image files or a dataset split, streamed through the encoder in batches into an index folder.

Photos are read, decoded and embedded ``batch`` at a time and written straight into the index's memory-mapped
embedding array, so memory stays bounded by the batch, whatever the collection's size. ITQ is then fitted once on
(at most ``ITQ_FIT_ITEMS``, evenly spaced) gallery embeddings and stored with the index. Adding photos writes a new
index of the old items followed by the new ones, and refits ITQ the same way, so the result equals indexing all
of them at once.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from jsbir.data.builders.images import to_rgb
from jsbir.metrics import fit_itq, pack_codes
from jsbir.retrieval import index as index_lib
from jsbir.retrieval.encoder import Encoder

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
ITQ_FIT_ITEMS = 100_000
BATCH = 256  # images decoded and embedded at a time
MODALITIES = ("photo", "sketch")


def list_images(folder: str) -> list[str]:
    """Every image file under ``folder`` (by suffix, recursively), sorted, absolute.

    Raises:
      FileNotFoundError: no such folder.
      ValueError: the folder holds no image file.
    """
    folder = os.path.abspath(os.path.expanduser(folder))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder} does not exist")
    found = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder)
        for name in names
        if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")
    )
    if not found:
        raise ValueError(f"image folder {folder} holds no image files ({', '.join(IMAGE_SUFFIXES)})")
    return found


def read_image(path: str, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB of an image file, decoded as the dataset builders decode theirs.

    Raises:
      ValueError: the file is not a readable image (named).
    """
    try:
        with Image.open(path) as image:
            return to_rgb(image, size)
    except Image.DecompressionBombError as e:  # PIL's guard against a small file that decodes to gigabytes
        raise ValueError(f"{path} is too large to decode safely ({e})") from e
    except (OSError, ValueError, SyntaxError) as e:
        raise ValueError(f"{path} is not a readable image ({type(e).__name__}: {e})") from e


def readable_images(paths: Sequence[str], size: int) -> tuple[list[str], list[dict[str, str]]]:
    """Splits image files into those :func:`read_image` decodes and the others (``--skip-bad``); each file is
    decoded here once more than when indexed.

    Returns:
      (the readable paths, in order; ``[{"path", "reason"}]`` of the others).
    """
    good, skipped = [], []
    for path in tqdm(paths, desc="check images", unit="img"):
        try:
            read_image(path, size)
            good.append(path)
        except ValueError as e:
            cause = e.__cause__ or e
            skipped.append({"path": os.path.abspath(path), "reason": f"{type(cause).__name__}: {cause}"})
    return good, skipped


def read_images(paths: Sequence[str], size: int) -> np.ndarray:
    """(N, size, size, 3) uint8 of image files (see :func:`read_image`)."""
    return np.stack([read_image(p, size) for p in paths]) if len(paths) else np.zeros((0, size, size, 3), np.uint8)


def folder_labels(paths: Sequence[str], root: str | None) -> tuple[np.ndarray, list[str]]:
    """Class of each file: its folder relative to ``root`` ("" at the root itself: label -1); sorted class names."""
    folders = [os.path.relpath(os.path.dirname(p), root) if root else "." for p in paths]
    names = sorted({f for f in folders if f != "."})
    lookup = {n: i for i, n in enumerate(names)}
    return np.array([lookup.get(f, -1) for f in folders], np.int32), names


def _fit_and_write_codes(writer: index_lib.IndexWriter, embeddings: np.ndarray, encoder: Encoder) -> dict[str, Any]:
    """Fits ITQ once on the gallery (evenly spaced items when it is large) and writes its codes and arrays."""
    count, views = len(embeddings), encoder.views
    view_dim = embeddings.shape[1] // views
    bits = min(int(encoder.config.eval.hash_bits), view_dim)
    fit_rows = np.unique(np.linspace(0, count - 1, min(count, ITQ_FIT_ITEMS)).round().astype(np.int64))
    first_view = np.asarray(embeddings[fit_rows, :view_dim], np.float64)
    itq = fit_itq(first_view, bits, seed=int(encoder.config.seed))
    for key, name in index_lib.ITQ_FILES.items():
        writer.save(name, getattr(itq, key))
    codes = writer.array(index_lib.CODE_FILES["itq"], (count, -(-bits // 8)), np.uint8)
    for start in range(0, count, 1 << 16):
        chunk = np.asarray(embeddings[start : start + (1 << 16), :view_dim], np.float64)
        codes[start : start + len(chunk)] = pack_codes(itq.encode(chunk))
    codes.flush()
    return {"bits": bits, "fit_items": len(fit_rows), "seed": int(encoder.config.seed)}


def _write_index(
    encoder: Encoder,
    out: str,
    batches: Iterator[tuple[np.ndarray, list[str], np.ndarray]],
    count: int,
    source: dict[str, Any],
    class_names: Sequence[str],
    modality: str,
    overwrite: bool,
    previous: index_lib.Index | None = None,
    photos: bool = False,
) -> index_lib.Index:
    """Streams ``batches`` of (uint8 images, paths, labels) through the encoder into a new index at ``out``,
    after the items of ``previous`` (copied unchanged) when given."""
    if modality not in MODALITIES:
        raise ValueError(f"modality {modality!r} is not one of {MODALITIES}")
    if encoder.learned_score:
        raise ValueError(f"method {encoder.method!r} ranks with a learned score, not a dot product: no index for it")
    begin = time.perf_counter()
    old = 0 if previous is None else len(previous)
    total = old + count
    paths: list[str] = [] if previous is None else list(previous.paths)
    labels = np.full(total, -1, np.int32)
    if previous is not None:
        labels[:old] = previous.labels
    with index_lib.IndexWriter(out, overwrite=overwrite) as writer:
        embeddings = hashed = None
        if previous is not None:
            embeddings = writer.array(index_lib.EMBEDDINGS, (total, previous.dim), np.float32)
            embeddings[:old] = previous.embeddings
            if "hash" in previous.manifest["codes"]:
                hashed = writer.array(index_lib.CODE_FILES["hash"], (total, previous.codes("hash").shape[1]), np.uint8)
                hashed[:old] = previous.codes("hash")
        if photos:
            os.makedirs(writer.path(index_lib.IMAGES))
        row = old
        with tqdm(total=count, desc=f"index {modality} images", unit="img") as bar:
            for images, names, batch_labels in batches:
                vectors, codes = encoder.encode(images, modality)
                if embeddings is None:
                    embeddings = writer.array(index_lib.EMBEDDINGS, (total, vectors.shape[1]), np.float32)
                if codes is not None and hashed is None:
                    hashed = writer.array(index_lib.CODE_FILES["hash"], (total, -(-codes.shape[1] // 8)), np.uint8)
                embeddings[row : row + len(images)] = vectors
                if codes is not None:
                    hashed[row : row + len(images)] = pack_codes(codes)
                labels[row : row + len(images)] = batch_labels
                if photos:
                    for image, name in zip(images, names, strict=True):
                        Image.fromarray(image).save(writer.path(name))
                paths.extend(names)
                row += len(images)
                bar.update(len(images))
        if row != total:
            raise RuntimeError(f"indexed {row} items, expected {total}")
        embeddings.flush()
        writer.save(index_lib.LABELS, labels)
        writer.save(index_lib.PATHS, paths)
        files = [index_lib.EMBEDDINGS, index_lib.LABELS, index_lib.PATHS, index_lib.CODE_FILES["itq"],
                 *index_lib.ITQ_FILES.values()]  # fmt: skip
        codes_info = {"itq": _fit_and_write_codes(writer, embeddings, encoder)}
        if hashed is not None:
            hashed.flush()
            codes_info["hash"] = {"bits": encoder.code_bits}
            files.append(index_lib.CODE_FILES["hash"])
        manifest = {
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "model": {**encoder.fingerprint(), "workdir": encoder.workdir},
            "config": encoder.config.to_dict(),
            "modality": modality,
            "embedding_dim": int(embeddings.shape[1]),
            "views": encoder.views,
            "count": total,
            "class_names": list(class_names),
            "codes": codes_info,
            "source": source,
            "index_s": time.perf_counter() - begin,
        }
        del embeddings, hashed  # close the memory maps before the folder moves
        return writer.commit(manifest, files)


def _file_batches(paths: Sequence[str], labels: np.ndarray, size: int, batch: int):
    for start in range(0, len(paths), batch):
        names = list(paths[start : start + batch])
        yield read_images(names, size), names, labels[start : start + batch]


def index_files(
    encoder: Encoder,
    paths: Sequence[str],
    out: str,
    root: str | None = None,
    overwrite: bool = False,
    batch: int = BATCH,
    modality: str = "photo",
    skipped: Sequence[dict[str, str]] = (),
) -> index_lib.Index:
    """Indexes image files.

    Args:
      encoder: the trained model (``load_run``).
      paths: the image files, in item order.
      out: the index folder to write.
      root: the folder they were listed from; each file's folder below it is its class (None: no classes).
      overwrite: replace an existing index at ``out``.
      batch: images read and embedded at a time.
      modality: "photo" (a gallery) or "sketch" (a set of queries).
      skipped: files left out as unreadable (:func:`readable_images`), listed in the manifest's ``source``.

    Raises:
      ValueError: no files, a file that is not a readable image (named; nothing is written), or a method that ranks
        with a learned score.
      FileExistsError: ``out`` exists and ``overwrite`` is False.
    """
    if not len(paths):
        raise ValueError("there are no images to index")
    paths = [os.path.abspath(p) for p in paths]
    labels, names = folder_labels(paths, root)
    source = {"kind": "files", "root": os.path.abspath(root) if root else None}
    if skipped:
        source["skipped"] = list(skipped)
    batches = _file_batches(paths, labels, encoder.image_size, batch)
    return _write_index(encoder, out, batches, len(paths), source, names, modality, overwrite)


def add_files(
    encoder: Encoder,
    index: index_lib.Index,
    paths: Sequence[str],
    root: str | None = None,
    batch: int = BATCH,
    skipped: Sequence[dict[str, str]] = (),
) -> index_lib.Index:
    """Adds image files to an index (files it already holds are skipped); equal to indexing all at once.
    ``skipped`` (unreadable files left out) joins the manifest's list of them.

    The class names become the sorted union of the old and new ones, and every label is renumbered to match.

    Raises:
      BadIndexError: the index was made by another model.
      ValueError: a new file is not a readable image (nothing changes).
    """
    index_lib.check_same_model(index.manifest["model"], encoder.fingerprint(), f"index {index.folder}")
    have = set(index.paths)
    paths = [p for p in (os.path.abspath(p) for p in paths) if p not in have]
    new_labels, new_names = folder_labels(paths, root)
    names = sorted(set(index.class_names) | set(new_names))
    lookup = {n: i for i, n in enumerate(names)}

    def renumber(labels: np.ndarray, old_names: Sequence[str]) -> np.ndarray:
        mapping = np.array([lookup[n] for n in old_names] + [-1], np.int32)  # -1 stays -1
        return mapping[labels]

    previous = index
    previous.labels = renumber(index.labels, index.class_names)
    batches = _file_batches(paths, renumber(new_labels, new_names), encoder.image_size, batch)
    source = {**index.manifest["source"], "added": index.manifest["source"].get("added", 0) + 1}
    if skipped:
        source["skipped"] = [*source.get("skipped", []), *skipped]
    modality = index.manifest["modality"]
    return _write_index(encoder, index.folder, batches, len(paths), source, names, modality, True, previous)


def index_split(
    encoder: Encoder, split: str, out: str, modality: str = "photo", overwrite: bool = False, batch: int = BATCH
) -> index_lib.Index:
    """Indexes the run's own evaluation set: the protocol's gallery photos (or query sketches) of ``split``.

    The images are stored in the index (``images/``), as a split has no files of its own.

    Args:
      encoder: the trained model.
      split: "test" or "validation".
      out: the index folder to write.
      modality: "photo" (the gallery) or "sketch" (the queries).
      overwrite: replace an existing index at ``out``.
      batch: images embedded at a time.
    """
    protocol = encoder.evaluator.protocol
    sets = protocol.sets(encoder.data) if split == "test" else protocol.validation_sets(encoder.data)
    images = {"photo": sets.gallery, "sketch": sets.queries}[modality]
    if images.image.ndim != 4 or images.image.shape[-1] != 3:
        raise ValueError(f"the {split} {modality}s are not RGB images ({images.image.shape}): they cannot be indexed")

    def batches():
        for start in range(0, len(images), batch):
            rows = np.arange(start, min(start + batch, len(images)))
            yield np.asarray(images.image[rows]), [f"{index_lib.IMAGES}/{i:07d}.png" for i in rows], images.label[rows]

    info = encoder.data.info
    source = {"kind": "split", "dataset": info.name, "split": info.split, "set": split}
    return _write_index(encoder, out, batches(), len(images), source, info.class_names, modality, overwrite,
                        photos=True)  # fmt: skip
