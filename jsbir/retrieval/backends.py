"""Search backends by name: exact inner-product and Hamming top-k over a gallery, all under one tie rule.

``BACKENDS``:

* ``numpy``: brute force, block by block; the reference the others are tested against.
* ``jax``: a jitted matrix product (or XOR popcount of packed 32-bit words) with ``lax.top_k``, the gallery sharded
  over the mesh's devices, a top-k per device (``jax.shard_map``) and a merge (:mod:`jsbir.retrieval.jax_search`).
* ``faiss``: FAISS ``IndexFlatIP`` / ``IndexBinaryFlat`` on CPU on every core, batches of 20 queries or more by
  its BLAS path, its candidates re-sorted under the tie rule (:mod:`jsbir.retrieval.faiss_search`).
* ``faiss_ivf``: FAISS ``IndexIVFFlat``, approximate inner-product search for collections of millions (float only;
  ``nprobe`` trades recall for speed).

Every exact backend returns the best ``k`` items by descending score with ties broken by gallery index, so they
agree item for item wherever their arithmetic gives equal scores (always for Hamming distances; for float dot
products, up to the last bit of rounding, which differs between BLAS and XLA summation orders).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from jsbir.retrieval import topk


class Backend(Protocol):
    """A gallery loaded into one backend, searched many times."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(Q, k) scores (higher = closer) and (Q, k) int64 gallery indices, best first, ties by index."""


class NumpyBackend:
    """Brute-force search in numpy (``topk.numpy_topk``).

    Args:
      gallery: (N, D) float32 embeddings, or (N, ceil(bits / 8)) uint8 packed codes; a memory map is fine.
      bits: None for inner-product search, else the code length for Hamming search.
      block: gallery rows scored at once.
    """

    def __init__(self, gallery: np.ndarray, bits: int | None = None, block: int = topk.BLOCK):
        self.gallery, self.bits, self.block = gallery, bits, block

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return topk.numpy_topk(queries, self.gallery, k, self.bits, self.block)


def _jax(gallery: np.ndarray, bits: int | None = None, **options: Any) -> Backend:
    from jsbir.retrieval import jax_search

    return jax_search.JaxBackend(gallery, bits, **options)


def _faiss(gallery: np.ndarray, bits: int | None = None, **options: Any) -> Backend:
    from jsbir.retrieval import faiss_search

    return faiss_search.FaissBackend(gallery, bits, **options)


def _faiss_ivf(gallery: np.ndarray, bits: int | None = None, **options: Any) -> Backend:
    from jsbir.retrieval import faiss_search

    if bits is not None:
        raise ValueError("backend 'faiss_ivf' searches float embeddings; use 'faiss' for exact Hamming search")
    return faiss_search.FaissIvfBackend(gallery, **options)


BACKENDS: dict[str, Callable[..., Backend]] = {
    "numpy": NumpyBackend,
    "jax": _jax,
    "faiss": _faiss,
    "faiss_ivf": _faiss_ivf,
}
EXACT_BACKENDS = ("numpy", "jax", "faiss")


def default_backend() -> str:
    """``faiss`` when it is installed, else ``numpy``."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return "numpy"
    return "faiss"


def make_backend(name: str | None, gallery: np.ndarray, bits: int | None = None, **options: Any) -> Backend:
    """The backend registered under ``name`` (None: :func:`default_backend`) over ``gallery``.

    Args:
      name: a key of ``BACKENDS``.
      gallery: (N, D) float32 embeddings, or (N, ceil(bits / 8)) uint8 packed codes.
      bits: None for inner-product search, else the code length for Hamming search.
      **options: the backend's own options (``block``, ``mesh``, ``nlist``, ``nprobe``).

    Raises:
      ValueError: an unknown name (the known ones are listed) or an empty gallery.
    """
    name = name or default_backend()
    if name not in BACKENDS:
        raise ValueError(f"unknown search backend {name!r}; known: {sorted(BACKENDS)}")
    if len(gallery) == 0:
        raise ValueError("the gallery is empty: there is nothing to search")
    return BACKENDS[name](gallery, bits, **options)
