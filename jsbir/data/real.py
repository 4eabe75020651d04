"""The real datasets behind ``jsbir.data.DATASETS``: prepare a manual-folder builder, split, attach semantics.

Zero-shot sets (``sketchy``, ``folder``, ``tuberlin``, ``quickdraw``, ``quickdraw_raw``). The builders write every
image to one tfds split; the division happens here, from ``config.data``:

* ``split`` names the unseen classes (see :mod:`jsbir.data.splits`): a shipped file (``eccv21``, ``sake25``,
  ``sake30``, ``doodle2search30``), ``random<N>_seed<S>``, or a class-list file. ``default`` is ``sake25`` for
  Sketchy, ``sake30`` for TU-Berlin, ``doodle2search30`` for QuickDraw-Extended, and ``random<N>_seed0`` with N =
  20% of the classes for ``folder`` and ``quickdraw_raw``. The resolved name is ``DatasetInfo.split``.
* ``classes`` (``random<N>_seed<S>`` or a class-list file; "" = all) first cuts the data to those classes,
  relabelled in the data's class order, so a few-class collection can be studied on a large set: e.g.
  ``classes=random26_seed0,split=random7_seed0`` keeps 26 Sketchy classes and leaves 7 of them unseen (a shipped
  split would name classes the subset lacks, so ``default`` draws 20% of the subset).
* Every image of an unseen class goes to test (queries and gallery use all of them, as the field does).
* The images of each seen class are divided by **group**: a photo and the sketches drawn from it form one group
  (so a pair never straddles train and test); any other image is its own group. Groups holding a photo and
  sketch-only groups are divided separately (so each seen class keeps test photos for generalized mode and test
  sketches): the sorted group keys (file names) of each stratum are permuted with
  ``numpy.random.default_rng([data_seed, crc32(class name)])`` and the first ``round(test_fraction * groups)`` (at
  least 1 and at most groups - 1 when the stratum has two or more) go to test. So the division is deterministic
  for a given set of files and seed, and does not depend on label order. The seen-class test photos are what
  generalized mode (``generalized=True``) adds to the gallery.

Fine-grained sets (``qmul_v1``, ``qmul_v2``): the official train/test files are kept, split ``official``. There is
one class, so seen/unseen carries no meaning; the class is marked both seen (training uses the train pairs) and
unseen (the evaluator's query/gallery selection takes the test pairs), and ``instance_id`` pairs each sketch with its
photo, so acc@K is computed. With ``qmul_v2``'s stroke layout (Chair-V2, Shoe-V2 as the SketchX code bases give them),
``stroke_drop`` (each stroke's drop probability) or ``stroke_jitter`` (each stroke's random shift, canvas pixels)
above 0 make the training sketches ``strokes.StrokeImages``: the training stream redraws each one from its strokes.

``sketchy_pairs``: Sketchy's instance pairs, fine-grained: the photos that have sketches, with those sketches (every
other image is left out). Every class is both seen and unseen, as for QMUL; the pairs of each class are divided by
photo with ``divide`` above (``test_fraction``, ``data_seed``), split ``pairs``. A sketch's own photo is ranked among
the test photos of its class (the ``fine_grained`` protocol).
"""

from __future__ import annotations

import dataclasses
import functools
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
from absl import logging

from jsbir.data import semantics, splits, strokes
from jsbir.data.builders import manual, qmul, quickdraw, quickdraw_raw, sketchy, tuberlin
from jsbir.data.records import load_split, tfds_data_dir
from jsbir.data.types import DatasetInfo, Images, SbirData, split_modalities

# name -> (builder class, default split; "" means random 20% of the classes)
_ZERO_SHOT: dict[str, tuple[type[manual.ManualSbirBuilder], str]] = {
    "sketchy": (sketchy.SketchyExtended, "sake25"),
    "folder": (sketchy.SbirFolder, ""),
    "tuberlin": (tuberlin.TuBerlinExtended, "sake30"),
    "quickdraw": (quickdraw.QuickDrawExtended, "doodle2search30"),
    "quickdraw_raw": (quickdraw_raw.QuickDrawRaw, ""),
}
_FINE_GRAINED: dict[str, type[manual.ManualSbirBuilder]] = {"qmul_v1": qmul.QmulV1, "qmul_v2": qmul.QmulV2}
# Keys added with the real datasets; read with defaults so that older saved configs still load.
_DEFAULTS = {
    "skip_corrupt": False,
    "test_fraction": 0.2,
    "semantics": "glove",
    "semantics_file": "",
    "subset": "",
    "max_per_class": 1000,
    "classes": "",
    "stroke_drop": 0.0,
    "stroke_jitter": 0.0,
}


def _opt(config: Any, key: str) -> Any:
    return config.get(key, _DEFAULTS[key]) if hasattr(config, "get") else getattr(config, key, _DEFAULTS[key])


def _builder_config(name: str, config: Any):
    if name == "quickdraw_raw":
        return quickdraw_raw.make_config(config.image_size, _opt(config, "max_per_class"))
    return manual.make_config(config.image_size)


def _prepare(name: str, builder_cls: type[manual.ManualSbirBuilder], builder_config, config: Any):
    if not config.root:
        raise ValueError(
            f"config.data.root is empty: point it at the {name} folder.{builder_cls.MANUAL_DOWNLOAD_INSTRUCTIONS}"
        )
    return manual.prepare(
        builder_cls, config.root, tfds_data_dir(config), builder_config, skip_corrupt=_opt(config, "skip_corrupt")
    )


def _select(arrays: dict[str, np.ndarray], keep: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[keep] for k, v in arrays.items()}


def _strings(values: np.ndarray) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values], dtype=object)


def divide(
    arrays: dict[str, np.ndarray],
    class_names: tuple[str, ...],
    unseen: tuple[int, ...],
    test_fraction: float,
    seed: int,
) -> np.ndarray:
    """Boolean test mask over the examples: unseen classes entirely, seen classes by group (module docstring).

    Args:
      arrays: the builder's examples as numpy arrays (label, modality, instance_id, file_name).
      class_names: label names.
      unseen: label ids of the unseen classes.
      test_fraction: share of each seen class's groups that go to test, in [0, 1).
      seed: the division seed (``config.data.data_seed``).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"config.data.test_fraction must be in [0, 1), got {test_fraction}")
    labels, ids = np.asarray(arrays["label"]), np.asarray(arrays["instance_id"])
    files, modality = _strings(arrays["file_name"]), np.asarray(arrays["modality"])
    photo_of = {int(i): f for i, f, m in zip(ids, files, modality, strict=True) if m == manual.PHOTO and i >= 0}
    groups = np.array([photo_of.get(int(i), f) for i, f in zip(ids, files, strict=True)], dtype=object)
    photo_groups = set(files[modality == manual.PHOTO])
    test = np.isin(labels, unseen)
    for label in np.unique(labels[~test]):
        rows = np.flatnonzero(labels == label)
        rng = np.random.default_rng([seed, zlib.crc32(class_names[label].encode("utf-8"))])
        chosen = set()
        for with_photo in (True, False):  # strata: groups holding a photo, then sketch-only groups
            keys = np.array(sorted({g for g in groups[rows] if (g in photo_groups) == with_photo}), dtype=object)
            count = int(round(test_fraction * len(keys)))
            if test_fraction > 0 and len(keys) > 1:
                count = min(max(count, 1), len(keys) - 1)
            chosen.update(keys[rng.permutation(len(keys))[:count]])
        test[rows] = [g in chosen for g in groups[rows]]
    return test


def _info(config: Any, builder: Any, split: str, seen, unseen, names: tuple[str, ...] | None = None) -> DatasetInfo:
    names = names or tuple(builder.info.features["label"].names)
    vectors = semantics.class_semantics(_opt(config, "semantics"), names, _opt(config, "semantics_file"))
    return DatasetInfo(
        name=config.name,
        split=split,
        class_names=names,
        seen=tuple(seen),
        unseen=tuple(unseen),
        semantics=vectors,
        image_size=config.image_size,
        generalized=bool(config.generalized),
        skipped_files=tuple(builder.info.metadata.get("skipped", ())) if builder.info.metadata else (),
    )


def unseen_classes(split: str, names: tuple[str, ...], default: str) -> tuple[str, tuple[int, ...]]:
    """The resolved split name and the label ids of its unseen classes (``config.data.split``).

    Args:
      split: the configured split; "default" means ``default``, or a random 20% of the classes when that is "".
      names: the dataset's classes.
      default: the dataset's default split.

    Raises:
      ValueError: an unknown split, a class the data lack, or every class unseen.
    """
    resolved = split
    if resolved == "default":
        resolved = default or f"random{max(1, round(0.2 * len(names)))}_seed0"
    unseen_names, source = splits.resolve_split(resolved, names)
    unseen = splits.match_classes(names, unseen_names, source)
    if len(unseen) >= len(names):
        raise ValueError(
            f"config.data.split={split!r} ({source}) lists all {len(names)} classes as unseen: no seen class "
            "is left to train on"
        )
    return resolved, unseen


def class_subset(
    arrays: dict[str, np.ndarray], names: tuple[str, ...], classes: str
) -> tuple[dict[str, np.ndarray], tuple[str, ...]]:
    """The examples of the classes ``classes`` names (``config.data.classes``: ``random<N>_seed<S>``, drawn as a
    random split is, or a class-list file), relabelled 0..len-1 in the data's class order, and their names.

    Raises:
      ValueError: an unknown subset, or a class the data lack.
    """
    chosen, source = splits.resolve_split(classes, names)
    keep = splits.match_classes(names, chosen, source, what=f"config.data.classes={classes!r}:")
    relabel = np.full(len(names), -1, np.int64)
    relabel[list(keep)] = np.arange(len(keep))
    labels = relabel[np.asarray(arrays["label"])]
    subset = _select(arrays, labels >= 0)
    subset["label"] = labels[labels >= 0].astype(np.asarray(arrays["label"]).dtype)
    return subset, tuple(names[i] for i in keep)


def zero_shot(config: Any, name: str) -> SbirData:
    """A zero-shot dataset from its manual folder ``config.root``, divided as the module docstring says."""
    builder_cls, default = _ZERO_SHOT[name]
    builder = _prepare(name, builder_cls, _builder_config(name, config), config)
    names = tuple(builder.info.features["label"].names)
    arrays = load_split(builder, "full")
    if _opt(config, "classes"):
        arrays, names = class_subset(arrays, names, _opt(config, "classes"))
        default = ""  # a shipped split names classes the subset may lack: a random 20% of the subset instead
    split, unseen = unseen_classes(config.split, names, default)
    test = divide(arrays, names, unseen, _opt(config, "test_fraction"), config.data_seed)
    train_sketches, train_photos = split_modalities(_select(arrays, ~test))
    test_sketches, test_photos = split_modalities(_select(arrays, test))
    logging.info(
        "%s (split %s, %d unseen of %d classes): train %d sketches / %d photos, test %d / %d",
        name, split, len(unseen), len(names), len(train_sketches), len(train_photos),
        len(test_sketches), len(test_photos),
    )  # fmt: skip
    seen = [i for i in range(len(names)) if i not in set(unseen)]
    info = _info(config, builder, split, seen, unseen, names)
    return SbirData(info, train_sketches, train_photos, test_sketches, test_photos)


def fine_grained(config: Any, name: str) -> SbirData:
    """A QMUL set: official train/test pairs, one class marked both seen and unseen, split ``official``."""
    builder_cls = _FINE_GRAINED[name]
    if config.split not in ("default", "official"):
        raise ValueError(f"config.data.split={config.split!r}: {name} has one split, 'official'")
    subset = _opt(config, "subset")
    if builder_cls is qmul.QmulV1 and not subset and config.root:
        found = qmul.v1_subsets(config.root)
        if len(found) > 1:
            raise ValueError(f"{config.root} holds QMUL-V1 subsets {list(found)}: choose one with config.data.subset")
        subset = found[0] if found else ""
    builder = _prepare(name, builder_cls, qmul.make_config(config.image_size, subset), config)
    train = load_split(builder, "train")
    train_sketches, train_photos = split_modalities(train)
    drop, jitter = _opt(config, "stroke_drop"), _opt(config, "stroke_jitter")
    if drop or jitter:
        train_sketches = _with_strokes(config, name, train, train_sketches, drop, jitter)
    test_sketches, test_photos = split_modalities(load_split(builder, "test"))
    info = _info(config, builder, "official", (0,), (0,))
    return SbirData(info, train_sketches, train_photos, test_sketches, test_photos)


def _with_strokes(config: Any, name: str, train: dict, sketches: Images, drop: float, jitter: float) -> Images:
    """The training sketches as ``strokes.StrokeImages``: their vector forms re-read from the stroke file, so that
    the training stream draws them with stroke dropout and jitter (``config.data.stroke_drop``, ``stroke_jitter``)."""
    if name != "qmul_v2" or not qmul.stroke_files(config.root):
        raise ValueError(
            f"config.data.stroke_drop / stroke_jitter need vector sketches: the QMUL-V2 stroke layout (photo/ and a "
            f"<Set>V2_Coordinate file), not {name} at {config.root}"
        )
    names = _strings(train["file_name"])[np.asarray(train["modality"]) == manual.SKETCH]
    vectors = qmul.stroke_sketches(config.root, names)
    image = strokes.StrokeImages(vectors, config.image_size, drop_rate=drop, jitter=jitter, plain=sketches.image)
    return dataclasses.replace(sketches, image=image)


def sketchy_pairs(config: Any) -> SbirData:
    """Sketchy's sketch-photo pairs as a fine-grained set, divided as the module docstring says."""
    builder = _prepare("sketchy_pairs", sketchy.SketchyExtended, _builder_config("sketchy", config), config)
    names = tuple(builder.info.features["label"].names)
    arrays = load_split(builder, "full")
    ids, modality = np.asarray(arrays["instance_id"]), np.asarray(arrays["modality"])
    drawn = set(ids[(modality == manual.SKETCH) & (ids >= 0)].tolist())
    arrays = _select(arrays, np.isin(ids, list(drawn)))
    if not len(arrays["label"]):
        raise ValueError(f"{config.root}: no sketch pairs with a photo (a sketch <photo stem>-<k> of a photo)")
    test = divide(arrays, names, (), _opt(config, "test_fraction"), config.data_seed)
    train_sketches, train_photos = split_modalities(_select(arrays, ~test))
    test_sketches, test_photos = split_modalities(_select(arrays, test))
    logging.info(
        "sketchy_pairs: train %d sketches / %d photos, test %d / %d",
        len(train_sketches), len(train_photos), len(test_sketches), len(test_photos),
    )  # fmt: skip
    every = tuple(range(len(names)))
    return SbirData(
        _info(config, builder, "pairs", every, every), train_sketches, train_photos, test_sketches, test_photos
    )


LOADERS: dict[str, Callable[[Any], SbirData]] = {
    **{name: functools.partial(zero_shot, name=name) for name in _ZERO_SHOT},
    **{name: functools.partial(fine_grained, name=name) for name in _FINE_GRAINED},
    "sketchy_pairs": sketchy_pairs,
}
