"""Datasets by name: ``get_dataset(config.data)`` returns the examples in memory plus the zero-shot split.

Each dataset is a function registered in ``DATASETS``; it returns an :class:`~jsbir.data.types.SbirData` whose
``info`` says which classes are seen (trained on) and unseen (queried at test time) and carries the class side
information. ``get_dataset`` then attaches the class graph and the semantic distances built from that side
information (``config.data.graph``), so a model receives them as arrays. ``synthetic`` is rendered procedurally;
``sketchy``, ``folder``, ``tuberlin``, ``quickdraw``, ``quickdraw_raw``, ``qmul_v1``, ``qmul_v2`` and
``sketchy_pairs`` read the user's folder ``config.root`` (see :mod:`jsbir.data.real`); ``features`` reads the user's
own feature files there (see :mod:`jsbir.data.feature_files`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from jsbir.data import semantics, validation
from jsbir.data.records import class_ids, load_split, tfds_data_dir
from jsbir.data.types import DatasetInfo, SbirData, split_modalities


def _synthetic(config: Any) -> SbirData:
    from jsbir.data import synthetic
    from jsbir.data.builders import synthetic_sbir

    if config.split not in ("default", "synthetic"):
        raise ValueError(f"config.data.split={config.split!r}: the synthetic set has one split, 'default'")
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


def _features(config: Any) -> SbirData:
    from jsbir.data import feature_files

    return feature_files.load_dataset(config)


# Real datasets read a manual folder (config.root); see jsbir.data.real for their splits and jsbir.data.builders.
_REAL_ZERO_SHOT = ("sketchy", "folder", "tuberlin", "quickdraw", "quickdraw_raw")
_REAL = (*_REAL_ZERO_SHOT, "qmul_v1", "qmul_v2", "sketchy_pairs")
DATASETS: dict[str, Callable[[Any], SbirData]] = {
    "synthetic": _synthetic,
    **{n: _real(n) for n in _REAL},
    "features": _features,
}


SEMANTICS_SETTINGS = ("inductive", "transductive")


def with_class_graph(data: SbirData, config: Any) -> SbirData:
    """``data`` with ``info.class_graph`` and ``info.semantic_distance`` built from its class vectors.

    Inductive (the default): the graph is built on the vectors of the classes training may use, the seen ones, and
    every other class is an isolated node, so no unseen vector can reach a seen prototype. Transductive (a named
    option, stated in every report): the graph joins all classes.

    Args:
      data: a loaded dataset.
      config: the ``config.data`` section (``graph``: "knn" or "mst"; ``graph_k``: neighbours for "knn";
        ``semantics_setting``: "inductive" or "transductive").

    Raises:
      ValueError: an unknown setting.
    """
    setting = config.semantics_setting
    if setting not in SEMANTICS_SETTINGS:
        raise ValueError(f"config.data.semantics_setting={setting!r} is not one of {SEMANTICS_SETTINGS}")
    info = dataclasses.replace(data.info, semantics_setting=setting)
    vectors, used = info.semantics, np.flatnonzero(info.graph_mask)
    graph = np.zeros((info.num_classes, info.num_classes), bool)
    graph[np.ix_(used, used)] = semantics.class_graph(vectors[used], kind=config.graph, k=config.graph_k)
    info = dataclasses.replace(
        info, class_graph=graph, semantic_distance=semantics.semantic_distances(vectors).astype(np.float32)
    )
    return dataclasses.replace(data, info=info)


def get_dataset(config: Any) -> SbirData:
    """Loads the dataset named by ``config.name`` (the ``config.data`` section), holds out its validation split
    (``config.val_fraction``) and builds its class graph.

    Raises:
      ValueError: for an unknown name, naming the known ones.
    """
    if config.name not in DATASETS:
        raise ValueError(f"config.data.name={config.name!r} is not one of {sorted(DATASETS)}")
    if config.get("classes", "") and config.name not in _REAL_ZERO_SHOT:
        raise ValueError(
            f"config.data.classes={config.classes!r}: a class subset is for the real zero-shot sets "
            f"{_REAL_ZERO_SHOT}, not {config.name!r}"
        )
    data = validation.hold_out(DATASETS[config.name](config), config.val_fraction, config.data_seed)
    return with_class_graph(data, config)
