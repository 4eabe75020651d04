"""Exact top-k search in JAX: the gallery sharded over the mesh, a block-wise top-k per device, then a merge.

Each device holds a contiguous slice of the gallery (padded to whole blocks; padding rows score below everything)
and scans it block by block with ``lax.scan``, keeping a running top-k, so the (queries, block) score matrix is the
largest temporary whatever the gallery size. ``lax.top_k`` keeps the lower position first among equal values, and
every merge puts lower gallery indices first (the running list before the new block, device 0 before device 1), so
ties come out in gallery-index order, as the numpy reference does. Float scores are dot products; Hamming scores are
minus the popcount of the XOR of codes packed into uint32 words.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jsbir import sharding

BLOCK = 1 << 14  # gallery rows per scan step on one device
QUERY_BLOCK = 1024  # queries per call: bounds the (queries, block) temporaries


def _words(packed: np.ndarray) -> np.ndarray:
    """(N, bytes) uint8 codes as (N, ceil(bytes / 4)) uint32 words (zero padding leaves XOR popcounts unchanged)."""
    packed = np.asarray(packed, np.uint8)
    padded = np.pad(packed, ((0, 0), (0, -packed.shape[1] % 4)))
    return np.ascontiguousarray(padded).view(np.uint32)


class JaxBackend:
    """Exact search with the gallery on the mesh's devices.

    Args:
      gallery: (N, D) float32 embeddings, or (N, ceil(bits / 8)) uint8 packed codes (a memory map is fine: each
        device's slice is read from it directly).
      bits: None for inner-product search, else the code length for Hamming search.
      mesh: the device mesh (default: all devices, ``jsbir.sharding.make_mesh``).
      block: gallery rows per scan step on a device.
    """

    def __init__(self, gallery: np.ndarray, bits: int | None = None, mesh: Mesh | None = None, block: int = BLOCK):
        self.mesh = sharding.make_mesh() if mesh is None else mesh
        self.bits, self.n = bits, len(gallery)
        devices = self.mesh.size
        per_device = math.ceil(self.n / devices)
        self.block = max(1, min(block, per_device))
        self.per_device = math.ceil(per_device / self.block) * self.block
        rows = gallery if bits is None else _words(gallery)
        dtype = np.float32 if bits is None else np.uint32
        shape = (self.per_device * devices, rows.shape[1])

        def piece(index: tuple[slice, ...]) -> np.ndarray:
            start, stop, _ = index[0].indices(shape[0])
            out = np.zeros((stop - start, shape[1]), dtype)
            real = np.asarray(rows[start : min(stop, self.n)], dtype)
            out[: len(real)] = real
            return out

        self.gallery = jax.make_array_from_callback(shape, sharding.data_sharding(self.mesh), piece)
        self._search = {}

    def _compiled(self, k: int):
        if k not in self._search:
            self._search[k] = jax.jit(functools.partial(_sharded_topk, mesh=self.mesh, k=k, n=self.n,
                                                        block=self.block, hamming=self.bits is not None))  # fmt: skip
        return self._search[k]

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores and (Q, k) int64 gallery indices, best first, ties by gallery index.

        Args:
          queries: (Q, D) float32 embeddings, or (Q, ceil(bits / 8)) uint8 packed codes.
          k: results per query, 1 <= k <= N.
        """
        queries = np.asarray(queries, np.float32) if self.bits is None else _words(queries)
        replicated = NamedSharding(self.mesh, P())
        search = self._compiled(k)
        scores, ids = [], []
        for start in range(0, len(queries), QUERY_BLOCK):
            chunk = queries[start : start + QUERY_BLOCK]
            s, i = search(jax.device_put(chunk, replicated), self.gallery)
            scores.append(np.asarray(s))
            ids.append(np.asarray(i))
        return np.concatenate(scores), np.concatenate(ids).astype(np.int64)


def _scores(queries: jax.Array, block: jax.Array, hamming: bool) -> jax.Array:
    if not hamming:
        scores = jnp.dot(queries, block.T, precision=jax.lax.Precision.HIGHEST)
        return jnp.where(scores == 0, 0.0, scores)  # -0.0 becomes +0.0: top_k would rank +0.0 first
    xor = jnp.bitwise_xor(queries[:, None, :], block[None, :, :])
    # float32 holds every distance exactly, and XLA's CPU top_k is about 50x faster on floats than on integers
    return -jnp.sum(jax.lax.population_count(xor).astype(jnp.int32), axis=-1).astype(jnp.float32)


def _sharded_topk(queries: jax.Array, gallery: jax.Array, *, mesh: Mesh, k: int, n: int, block: int, hamming: bool):
    lowest = -jnp.inf

    def local(q: jax.Array, g: jax.Array) -> tuple[jax.Array, jax.Array]:
        rows = g.shape[0]
        base = jax.lax.axis_index(sharding.DATA_AXIS) * rows
        blocks = g.reshape(rows // block, block, g.shape[1])

        def step(carry, inputs):
            best_s, best_i = carry
            chunk, j = inputs
            ids = base + j * block + jnp.arange(block)
            s = jnp.where(ids[None, :] < n, _scores(q, chunk, hamming), lowest)
            top_s, top = jax.lax.top_k(s, min(k, block))
            cand_s = jnp.concatenate([best_s, top_s], axis=1)
            cand_i = jnp.concatenate([best_i, ids[top]], axis=1)
            keep_s, keep = jax.lax.top_k(cand_s, k)
            return (keep_s, jnp.take_along_axis(cand_i, keep, axis=1)), None

        init = (jnp.full((q.shape[0], k), lowest, jnp.float32), jnp.full((q.shape[0], k), n, jnp.int32))
        init = jax.lax.pcast(init, (sharding.DATA_AXIS,), to="varying")  # the carry differs per device
        (best_s, best_i), _ = jax.lax.scan(step, init, (blocks, jnp.arange(blocks.shape[0])))
        return best_s[None], best_i[None]

    split = P(sharding.DATA_AXIS)
    per_device = jax.shard_map(local, mesh=mesh, in_specs=(P(), split), out_specs=(split, split))
    dev_s, dev_i = per_device(queries, gallery)  # (devices, Q, k), device d's indices all below device d+1's
    cand_s = jnp.moveaxis(dev_s, 0, 1).reshape(queries.shape[0], -1)
    cand_i = jnp.moveaxis(dev_i, 0, 1).reshape(queries.shape[0], -1)
    top_s, top = jax.lax.top_k(cand_s, k)
    return top_s.astype(jnp.int32) if hamming else top_s, jnp.take_along_axis(cand_i, top, axis=1)
