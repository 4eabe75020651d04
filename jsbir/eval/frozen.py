"""The frozen baseline: what the pretrained network knows before any training, and its fusion with a trained model.

A trained model's figure means little beside random heads and chance alone: the network it starts from already
ranks photos by its ImageNet features. :class:`FrozenBaseline` scores an evaluator's own queries and gallery (the
same images, image size and test-time views) by the cosine of the pretrained backbone's pooled last feature map:

* image methods: ``config.model``'s backbone with its ``pretrained`` weights, fed each view as RGB in [-1, 1]
  (``preprocess.rgb_views_like``: a ``gray_crop`` method's crops and mirrors, in colour);
* feature methods (ZSCMR): the dataset's own pre-extracted features (``config.features``' extractor).

Its metrics enter every report under ``frozen/``. Features are cached per set like extracted features
(``jsbir.data.features``: content-addressed entries), so validation pays for them once per run and the next run
on the same images not at all.

**Fusion** (``config.eval.fuse_frozen``): the ranking score becomes ``(1 - w) * learned + w * frozen`` cosine.
``"validation"`` chooses ``w`` from ``FUSION_WEIGHTS`` at every validation, together with the checkpoint (the
best pair wins; ``w = 1`` is the frozen features themselves, so validation can always fall back to them, and a
tie keeps the smaller ``w``); the test evaluation uses the chosen pair. ``"off"`` ranks by the learned score.
``"auto"`` (the default) is ``"validation"`` for the zero-shot protocol over a pretrained backbone, else ``"off"``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jsbir import sharding
from jsbir.data import features, pipeline
from jsbir.data.types import Images

FUSIONS = ("auto", "off", "validation")
FUSION_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))
PREFIX = "frozen/"


def pretrained_backbone(config: Any) -> dict[str, Any] | None:
    """The extractor section (``features.make_extractor_of``) of the pretrained backbone a run starts from:
    ``config.features`` for a method that trains on features, else ``config.model``'s backbone; None when it has
    no pretrained weights (a randomly initialised network has no baseline worth the name)."""
    section = config.get("features") if "features" in config else config.get("model")
    if section is None or not section.get("pretrained", ""):
        return None
    return {
        "backbone": section.backbone,
        "backbone_args": dict(section.backbone_args),
        "pretrained": section.pretrained,
        "input_size": section.get("input_size", 0),
    }


def fusion_setting(config: Any, protocol: str) -> str:
    """The resolved ``config.eval.fuse_frozen``: "off" or "validation" ("auto": "validation" for a zero-shot
    protocol over a pretrained backbone, else "off"; a run made before the setting existed: "off").

    Raises:
      ValueError: an unknown setting, or fusion asked of a model with no pretrained weights (naming the key).
    """
    setting = config.eval.get("fuse_frozen", "off")
    if setting not in FUSIONS:
        raise ValueError(f"config.eval.fuse_frozen={setting!r} is not one of {FUSIONS}")
    pretrained = pretrained_backbone(config) is not None
    if setting == "auto":
        return "validation" if pretrained and protocol == "zero_shot" else "off"
    if setting != "off" and not pretrained:
        where = "features" if "features" in config else "model"
        raise ValueError(
            f"config.eval.fuse_frozen={setting!r} fuses the pretrained backbone's features, but "
            f"config.{where}.pretrained is empty: give the model pretrained weights or set "
            "config.eval.fuse_frozen='off'"
        )
    return setting


def fuse(learned: np.ndarray, frozen: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * learned + weight * frozen`` (both (Q, N) scores); ``learned`` itself at weight 0."""
    if weight == 0:
        return learned
    return ((1.0 - weight) * learned + weight * frozen).astype(np.float32)


def _normalized(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def extract_views(
    extractor: features.Extractor, images: Images, preprocessing: str, views: int, batch_size: int, mesh: Any
) -> list[np.ndarray]:
    """(N, C) float32 pooled features of ``images`` for each of ``views`` test-time views (see the module
    docstring), in batches sharded over ``mesh``."""
    chunks: list[list[np.ndarray]] = [[] for _ in range(views)]
    batches = pipeline.eval_batches(
        images, batch_size, preprocessing, views, jax.process_index(), jax.process_count(), rgb=True
    )
    for xs, mask in sharding.global_batches(batches, mesh):
        for v, x in enumerate(xs):
            chunks[v].append(sharding.to_host(extractor.embed(extractor.variables, x))[mask])
    out = [np.concatenate(c).astype(np.float32) for c in chunks]
    if not all(np.isfinite(o).all() for o in out):
        raise FloatingPointError(f"the frozen {extractor.backbone} features hold NaN or infinite values")
    return out


def cached_views(config: Any, mesh: Any, images: Images, preprocessing: str, views: int, name: str) -> list[np.ndarray]:
    """The frozen backbone's L2-normalised features of ``images``, one (N, C) array per view, from the feature
    cache or extracted and cached (an entry per set, extractor, preprocessing and view count)."""
    if images.image.ndim == 2:  # a dataset of pre-extracted backbone features: they are the frozen features
        return [_normalized(np.asarray(images.image, np.float32))]
    section = pretrained_backbone(config)
    extractor = features.make_extractor_of(section, config.seed, int(images.image.shape[1]))
    key = f"frozen-{extractor.key[:16]}-{preprocessing}{views}-{features.content_key(images)[:20]}"
    folder = os.path.join(features.cache_dir(config), key)
    stacked = features.read_entry(folder, images)
    if not features.all_processes(stacked is not None):
        stacked = np.concatenate(
            extract_views(extractor, images, preprocessing, views, config.eval.batch_size, mesh), axis=1
        )
        if jax.process_index() == 0:
            manifest = {"set": name, "backbone": extractor.backbone, "weights": extractor.description,
                        "preprocessing": preprocessing, "views": views, "count": len(images)}  # fmt: skip
            features.write_entry(folder, stacked, images, manifest)
    return [_normalized(v) for v in np.split(stacked, views, axis=1)]


class FrozenBaseline:
    """The frozen pretrained features of one evaluator's queries and gallery, computed at the first call.

    Args:
      config: the run config.
      mesh: the device mesh the backbone runs on.
      preprocessing: the method's preprocessing (whose views the baseline takes, in colour).
      views: the evaluation's test-time views.
      split: "test" or "validation" (names the cache entries).
    """

    def __init__(self, config: Any, mesh: Any, preprocessing: str, views: int, split: str):
        self.config, self.mesh, self.preprocessing, self.split = config, mesh, preprocessing, split
        # one view for feature datasets, which have no others
        self.views = 1 if preprocessing == "features" else views
        self.backbone = pretrained_backbone(config)["backbone"]
        self._features: tuple[list[np.ndarray], list[np.ndarray]] | None = None

    def score_rows(self, queries: Images, gallery: Images) -> Callable[[slice], np.ndarray]:
        """``rows -> (len(rows), N)`` float32 cosine of the frozen features of the queries ``rows`` against the
        gallery, averaged over the views (the features are read or extracted once)."""
        if self._features is None:
            q = cached_views(self.config, self.mesh, queries, self.preprocessing, self.views, f"{self.split}_sketches")
            g = cached_views(self.config, self.mesh, gallery, self.preprocessing, self.views, f"{self.split}_photos")
            self._features = (q, g)
        q, g = self._features
        return lambda rows: (sum(a[rows] @ b.T for a, b in zip(q, g, strict=True)) / len(q)).astype(np.float32)

    def describe(self) -> str:
        """One line for the report."""
        views = f", {self.views} views averaged" if self.views > 1 else ""
        return f"the pretrained {self.backbone}'s pooled features, no training, cosine{views}"
