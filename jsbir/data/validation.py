"""The validation split: examples held out of training, drawn from the seen classes only, for choosing checkpoints
and hyperparameters without ever looking at the test classes.

* Zero-shot sets: a seeded share of the seen classes becomes pseudo-unseen. Those classes leave ``info.seen`` (so
  they are neither trained on nor, in the inductive setting, joined to any class in the class graph) and are named in
  ``info.validation``; their training-split sketches and photos are the validation queries and gallery. No test
  image and no unseen class can enter it: it is cut from the training split of seen classes.
* Instance-level sets (every class both seen and unseen, as the QMUL sets): a seeded share of the training
  instances (a photo with its sketches) is held out instead, and ``info.validation`` stays empty.

The classes (or instances) are drawn with ``numpy.random.default_rng([seed, 2])`` from their sorted ids.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jsbir.data.types import SbirData


def _count(fraction: float, available: int) -> int:
    """How many of ``available`` items ``fraction`` holds out: at least one, and at least one left."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"config.data.val_fraction must be in [0, 1), got {fraction}")
    if fraction == 0.0 or available < 2:
        return 0
    return min(max(1, round(fraction * available)), available - 1)


def hold_out(data: SbirData, fraction: float, seed: int) -> SbirData:
    """``data`` with its validation examples moved out of the training split (see the module docstring).

    Args:
      data: a loaded dataset.
      fraction: share of the seen classes (zero-shot) or of the training instances (instance-level) to hold out;
        0 holds out nothing.
      seed: the draw's seed (``config.data.data_seed``).
    """
    info = data.info
    rng = np.random.default_rng([seed, 2])
    candidates = sorted(set(info.seen) - set(info.unseen))
    if candidates:
        held = np.sort(rng.permutation(candidates)[: _count(fraction, len(candidates))])
        if not len(held):
            return data
        info = dataclasses.replace(
            info, seen=tuple(c for c in info.seen if c not in set(held)), validation=tuple(int(c) for c in held)
        )
        is_val = [np.isin(images.label, held) for images in (data.train_sketches, data.train_photos)]
    else:
        ids = np.unique(data.train_photos.instance_id[data.train_photos.instance_id >= 0])
        held = rng.permutation(ids)[: _count(fraction, len(ids))]
        if not len(held):
            return data
        is_val = [np.isin(images.instance_id, held) for images in (data.train_sketches, data.train_photos)]
    return dataclasses.replace(
        data,
        info=info,
        train_sketches=data.train_sketches.select(~is_val[0]),
        train_photos=data.train_photos.select(~is_val[1]),
        val_sketches=data.train_sketches.select(is_val[0]),
        val_photos=data.train_photos.select(is_val[1]),
    )
