"""Backbone features of every image, extracted once over the device mesh and cached on disk, content-addressed.

Methods that declare the ``features`` sampler (ZSCMR) train on vectors, not pixels. :func:`with_features` turns a
loaded dataset's images into those vectors: a pretrained backbone of ``jsbir.nn.backbones`` (``config.features``)
embeds each set of images (the spatial mean of its last feature map, images in [-1, 1], no augmentation), in
batches sharded over the mesh, with a progress bar.

The cache. Each set (training sketches, training photos, validation and test sets) is one entry, a folder
``<cache_dir>/<extractor key>-<content key>`` holding ``features.npy``, ``labels.npy`` and ``manifest.json``:

* the extractor key hashes the backbone name and arguments, the SHA-256 of its actual variables (so other weights,
  a changed weight file or another initialisation never share an entry), the preprocessing, the image size, the
  backbone's input size and ``EXTRACTOR_VERSION``;
* the content key hashes the set's pixels, labels and instance ids in order, so an added, removed, reordered or
  edited image, or another split, is a new entry;
* an entry is written into ``incomplete.<name>.<pid>`` and renamed into place when complete, so a killed
  extraction never leaves a folder that reads as complete; the manifest records the SHA-256 of ``features.npy``,
  and an entry that fails that check (or whose labels differ) is rebuilt, with a warning, not served.

:mod:`jsbir.data.edges` keeps photos' edge maps in entries of the same form (``read_entry``, ``write_entry``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from tqdm import tqdm

from jsbir import sharding
from jsbir.data import pipeline, records
from jsbir.data.types import Images, SbirData
from jsbir.nn import backbones
from jsbir.weights import pretrained

EXTRACTOR_VERSION = 1
PREPROCESSING = "rgb in [-1, 1], no augmentation; spatial mean of the last feature map"
_SETS = ("train_sketches", "train_photos", "val_sketches", "val_photos", "test_sketches", "test_photos")
_INCOMPLETE = "incomplete."


def _sha256_arrays(arrays: list[np.ndarray], extra: str = "") -> str:
    digest = hashlib.sha256(extra.encode())
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def content_key(images: Images) -> str:
    """SHA-256 of a set's pixels, labels and instance ids, in order. Images still in their prepared records are
    named by the records and rows instead of read (``RecordImages.fingerprint``): prepared records never change."""
    if isinstance(images.image, records.RecordImages):
        return _sha256_arrays([images.label, images.instance_id], extra=images.image.fingerprint())
    return _sha256_arrays([images.image, images.label, images.instance_id])


def file_sha256(path: str) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Extractor:
    """A backbone with its variables, ready to embed images.

    Attributes:
      backbone: the name in ``backbones.BACKBONES``.
      embed: jitted ``(variables, images) -> (B, C)`` pooled features.
      variables: the backbone's variables.
      description: what made the variables ("imagenet", a file, or a seeded initialisation).
      key: SHA-256 of everything that determines the features of a given image (see the module docstring).
    """

    backbone: str
    embed: Callable[[Any, jax.Array], jax.Array]
    variables: Any
    description: str
    key: str


def make_extractor(config: Any, image_size: int) -> Extractor:
    """The extractor of ``config.features`` for ``image_size``-pixel images (see :func:`make_extractor_of`)."""
    return make_extractor_of(config.features, config.seed, image_size)


def make_extractor_of(cfg: Any, seed: int, image_size: int) -> Extractor:
    """The extractor a features section describes, for ``image_size``-pixel images.

    ``cfg`` holds ``backbone``, ``backbone_args``, ``pretrained`` and ``input_size``. ``pretrained`` is "imagenet",
    a weights file (see :mod:`jsbir.weights.pretrained`), or "" for a random initialisation from ``seed`` (only
    useful for tests: such features know nothing). ``input_size``, when not 0, resizes the images (bilinear) to
    that side before the backbone.
    """
    name, args, weights_source, input_size = (cfg[k] for k in ("backbone", "backbone_args", "pretrained", "input_size"))
    args = dict(args)
    module = backbones.get_backbone(name, **args)
    if weights_source:
        variables = pretrained.load_pretrained(name, weights_source, args)
        description = weights_source
    else:
        dummy = jnp.zeros((1, image_size, image_size, 3))
        variables = jax.device_get(module.init(jax.random.key(seed), dummy, train=False))
        description = f"random initialisation, seed {seed}"
        logging.warning("no pretrained weights named: features of a randomly initialised %s", name)
    leaves = jax.tree_util.tree_flatten_with_path(variables)[0]
    names = [jax.tree_util.keystr(path) for path, _ in leaves]
    weights = _sha256_arrays([np.asarray(v) for _, v in leaves], extra="|".join(names))
    identity = json.dumps(
        {
            "backbone": name,
            "args": sorted(args.items()),
            "weights_sha256": weights,
            "preprocessing": PREPROCESSING,
            "image_size": image_size,
            "input_size": input_size,
            "version": EXTRACTOR_VERSION,
        },
        sort_keys=True,
    )

    def embed(v: Any, images: jax.Array) -> jax.Array:
        if input_size and input_size != images.shape[1]:
            shape = (images.shape[0], input_size, input_size, images.shape[3])
            images = jax.image.resize(images, shape, "bilinear")
        return jnp.mean(module.apply(v, images, train=False), axis=(1, 2))

    key = hashlib.sha256(identity.encode()).hexdigest()
    return Extractor(name, jax.jit(embed), variables, description, key)


def extract(extractor: Extractor, images: Images, batch_size: int, mesh: Any, desc: str = "features") -> np.ndarray:
    """(N, C) float32 features of ``images`` in order, computed in batches sharded over ``mesh``."""
    batches = pipeline.eval_batches(images, batch_size, "rgb", 1, jax.process_index(), jax.process_count())
    total = -(-len(images) // batch_size)
    chunks = []
    for (x,), mask in tqdm(
        sharding.global_batches(batches, mesh), total=total, desc=desc, disable=jax.process_index() != 0
    ):
        chunks.append(sharding.to_host(extractor.embed(extractor.variables, x))[mask])
    features = np.concatenate(chunks).astype(np.float32)
    if not np.isfinite(features).all():
        raise FloatingPointError(f"the {extractor.backbone} features of {desc} hold NaN or infinite values")
    return features


def read_entry(folder: str, images: Images, kind: str = "features") -> np.ndarray | None:
    """The cached ``<kind>.npy`` array of ``images`` in ``folder`` (one row per image), or None when absent; a
    damaged entry is removed, with a warning."""
    manifest_path = os.path.join(folder, "manifest.json")
    if not os.path.isfile(manifest_path):
        return None
    try:
        with open(manifest_path) as f:
            manifest = json.load(f)
        path = os.path.join(folder, f"{kind}.npy")
        if file_sha256(path) != manifest[f"{kind}_sha256"]:
            raise ValueError(f"{kind}.npy differs from its SHA-256 record")
        features = np.load(path, allow_pickle=False)
        labels = np.load(os.path.join(folder, "labels.npy"), allow_pickle=False)
        if features.shape[0] != len(images) or not np.array_equal(labels, images.label):
            raise ValueError(f"{features.shape[0]} rows whose labels differ from the {len(images)} images'")
    except (OSError, ValueError, KeyError) as err:
        logging.warning("%s cache %s is damaged (%s): computing again", kind, folder, err)
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return features


def write_entry(
    folder: str, array: np.ndarray, images: Images, manifest: dict[str, Any], kind: str = "features"
) -> None:
    """Writes ``array`` (as ``<kind>.npy``) and the labels of ``images`` into a temporary folder, then renames it to
    ``folder`` (never a half entry); the manifest gains the SHA-256 of ``<kind>.npy``."""
    parent, name = os.path.split(folder)
    os.makedirs(parent, exist_ok=True)
    for stale in os.listdir(parent):  # left by a killed extraction of this entry
        if stale.startswith(f"{_INCOMPLETE}{name}.") and not _alive(stale.rsplit(".", 1)[-1]):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    tmp = os.path.join(parent, f"{_INCOMPLETE}{name}.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    np.save(os.path.join(tmp, f"{kind}.npy"), array)
    np.save(os.path.join(tmp, "labels.npy"), images.label)
    manifest = {**manifest, f"{kind}_sha256": file_sha256(os.path.join(tmp, f"{kind}.npy"))}
    with open(os.path.join(tmp, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2)
    try:
        os.rename(tmp, folder)
    except OSError:  # another process finished the same entry first: keep its copy
        shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def all_processes(flag: bool) -> bool:
    """Whether ``flag`` holds on every process (a collective call when there are several)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.all(multihost_utils.process_allgather(np.array(flag))))


def cache_dir(config: Any) -> str:
    """``config.features.cache_dir``, else (or with no ``features`` section) ``jsbir_features`` in the
    tensorflow-datasets folder."""
    default = os.path.join(records.tfds_data_dir(config.data), "jsbir_features")
    section = config.get("features") if "features" in config else None
    return os.path.expanduser(section.get("cache_dir", "") if section else "") or default


def cached_features(extractor: Extractor, images: Images, config: Any, mesh: Any, name: str) -> tuple[np.ndarray, bool]:
    """The features of ``images`` from the cache, or extracted and cached; and whether the cache served them."""
    folder = os.path.join(cache_dir(config), f"{extractor.key[:20]}-{content_key(images)[:20]}")
    features = read_entry(folder, images)
    hit = all_processes(features is not None)  # extraction is collective: every process extracts unless all hit
    if hit:
        return features, True
    begin = time.perf_counter()
    features = extract(extractor, images, config.features.batch_size, mesh, desc=f"{extractor.backbone} {name}")
    if jax.process_index() == 0:
        manifest = {
            "set": name,
            "backbone": extractor.backbone,
            "weights": extractor.description,
            "preprocessing": PREPROCESSING,
            "image_size": int(images.image.shape[1]),
            "count": int(features.shape[0]),
            "dim": int(features.shape[1]),
            "extract_s": time.perf_counter() - begin,
            "version": EXTRACTOR_VERSION,
        }
        write_entry(folder, features, images, manifest)
    return features, False


def with_features(data: SbirData, config: Any, mesh: Any) -> tuple[SbirData, dict[str, Any]]:
    """``data`` with every set's images replaced by their features (from the cache when it has them).

    Args:
      data: a dataset of images.
      config: the run config (``features``, ``data``, ``seed``).
      mesh: the device mesh.

    Returns:
      The dataset of (N, C) features, and a summary for the report: the backbone, its weights, the feature size
      and which sets the cache served.

    Raises:
      ValueError: ``config`` has no ``features`` section.
    """
    if "features" not in config:
        raise ValueError(
            "this method trains on features but the config has no 'features' section (see configs/zscmr.py)"
        )
    extractor = make_extractor(config, data.info.image_size)
    replaced, served = {}, []
    for name in _SETS:
        images = getattr(data, name)
        if images is None:
            continue
        features, hit = cached_features(extractor, images, config, mesh, name)
        replaced[name] = dataclasses.replace(images, image=features)
        if hit:
            served.append(name)
    dim = int(replaced["train_sketches"].image.shape[1])
    logging.info("%s features (%d-d): cache served %s", extractor.backbone, dim, served or "nothing")
    summary = {
        "backbone": extractor.backbone,
        "weights": extractor.description,
        "dim": dim,
        "cache": cache_dir(config),
        "from_cache": served,
    }
    return dataclasses.replace(data, **replaced), summary
