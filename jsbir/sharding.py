"""One device mesh for the whole run: batches split on the ``data`` axis, parameters replicated.

Every process feeds its own slice of the global batch (``global_batch // process_count`` rows) and
:func:`to_global` assembles the global ``jax.Array`` from those host-local pieces, so the same code runs on one CPU,
eight fake CPU devices, a multi-GPU node or a TPU pod.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def make_mesh(devices: list[jax.Device] | None = None) -> Mesh:
    """A one-axis mesh named ``data`` over all (or the given) devices."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Arrays split along their leading (batch) dimension across the mesh."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    """Arrays held whole on every device."""
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh, what: str = "config.train.batch_size") -> int:
    """Returns the per-process batch, or raises if the global batch does not split evenly.

    Args:
      global_batch: the batch size across all processes.
      mesh: the mesh the batch is split over.
      what: the config key named in the error.

    Returns:
      ``global_batch // jax.process_count()``.
    """
    if global_batch % mesh.size:
        raise ValueError(f"{what}={global_batch} must be a multiple of the number of devices ({mesh.size})")
    return global_batch // jax.process_count()


def to_global(batch: Any, mesh: Mesh) -> Any:
    """Turns a pytree of host-local numpy batches into global arrays sharded on ``data``."""
    sharding = data_sharding(mesh)
    return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, x), batch)


def global_batches(batches: Iterable[dict[str, Any]], mesh: Mesh) -> Iterator[tuple[list[jax.Array], np.ndarray]]:
    """Host evaluation batches (``{"views": [...], "mask"}``, this process's share) as global arrays over ``mesh``.

    Yields:
      (views, mask): each view as one global array, and the (global batch,) bool numpy mask of the rows that are
      images (the rest pad the last batch), the same on every host.
    """
    for batch in batches:
        yield [to_global(x, mesh) for x in batch["views"]], to_host(to_global(batch["mask"], mesh))


def to_host(tree: Any) -> Any:
    """Gathers (possibly multi-process) global arrays into numpy arrays on every host."""
    from jax.experimental import multihost_utils

    if jax.process_count() == 1:
        return jax.tree.map(np.asarray, tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def max_over_processes(value: int) -> int:
    """The largest of every process's ``value`` (a collective: every process must call it at the same point).

    The trainer agrees on stop requests with it, so a signal that reaches one host stops all of them after the
    same step (and they write one checkpoint together) instead of leaving the others waiting in a collective.
    """
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.max(multihost_utils.process_allgather(np.asarray(value, np.int32))))
