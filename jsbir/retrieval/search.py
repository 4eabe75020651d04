"""Searching an index: the searcher over one representation, and the encoder an index was built with.

A :class:`Searcher` holds an index's gallery in one backend (``jsbir.retrieval.backends``) for one representation:
``float`` (inner product of the embeddings), ``itq`` (Hamming distance of the ITQ codes fitted at indexing; float
query embeddings are encoded with that same ITQ) or ``hash`` (Hamming distance of the method's own codes; the
queries are the method's +-1 codes).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from jsbir import checkpoint
from jsbir.metrics import pack_codes
from jsbir.retrieval import backends
from jsbir.retrieval import index as index_lib
from jsbir.retrieval.encoder import Encoder, config_from_dict, load_run

REPRESENTATIONS = ("float", "itq", "hash")


class Searcher:
    """An index's gallery loaded into a search backend.

    Args:
      index: the opened index.
      backend: a name in ``backends.BACKENDS``; None for ``backends.default_backend()``.
      representation: "float", "itq" or "hash".
      **options: the backend's own options (``mesh``, ``block``, ``nlist``, ``nprobe``).

    Raises:
      ValueError: an unknown backend or representation, or codes the index does not hold.
    """

    def __init__(self, index: index_lib.Index, backend: str | None = None, representation: str = "float",
                 **options: Any):  # fmt: skip
        if representation not in REPRESENTATIONS:
            raise ValueError(f"unknown representation {representation!r}; known: {REPRESENTATIONS}")
        self.index, self.representation = index, representation
        self.backend_name = backend or backends.default_backend()
        if representation == "float":
            self.bits, gallery = None, index.embeddings
        else:
            self.bits, gallery = index.code_bits(representation), index.codes(representation)
        self.itq = index.itq() if representation == "itq" else None
        self.backend = backends.make_backend(self.backend_name, gallery, self.bits, **options)

    def query_codes(self, queries: np.ndarray) -> np.ndarray:
        """Packed query codes of this representation: float embeddings through the index's ITQ for "itq", the
        method's (Q, bits) +-1 codes for "hash"."""
        if self.representation == "itq":
            return pack_codes(self.itq.encode(self.index.itq_input(queries)))
        return pack_codes(queries)

    def _check(self, queries: np.ndarray) -> np.ndarray:
        queries = np.asarray(queries)
        want = self.bits if self.representation == "hash" else self.index.dim
        what = f"{self.bits}-bit codes" if self.representation == "hash" else f"{want}-d embeddings"
        if queries.ndim != 2 or queries.shape[1] != want:
            raise ValueError(f"queries must be (Q, {want}) {what} for index {self.index.folder}, got {queries.shape}")
        if not np.isfinite(queries).all():
            raise ValueError("queries hold NaN or infinite values")
        return queries

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` closest gallery items of each query (k is clamped to the gallery's size).

        Args:
          queries: (Q, D) float32 embeddings for "float" and "itq", (Q, bits) +-1 codes for "hash".
          k: results per query.

        Returns:
          (Q, k) float32 scores (the mean dot product over the test-time views, as the evaluator scores, or minus
          Hamming distances), higher = closer, and (Q, k) int64 item
          indices, best first, ties by item index.

        Raises:
          ValueError: queries of the wrong size, non-finite queries, or k < 1.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        queries = self._check(queries)
        k = min(k, len(self.index))
        if self.representation == "float":  # the views' summed dot products: their mean is the evaluator's score
            scores, ids = self.backend.search(queries.astype(np.float32), k)
            scores = np.asarray(scores, np.float32) / np.float32(self.index.manifest["views"])
        else:
            scores, ids = self.backend.search(self.query_codes(queries), k)
        return np.asarray(scores, np.float32), np.asarray(ids, np.int64)


def get_searcher(index: index_lib.Index, backend: str | None = None, representation: str = "float",
                 **options: Any) -> Searcher:  # fmt: skip
    """A :class:`Searcher` over ``index`` (see its arguments)."""
    return Searcher(index, backend, representation, **options)


def load_encoder(index: index_lib.Index, workdir: str | None = None, mesh: Any = None) -> Encoder:
    """The encoder an index was built with: its run config and the very checkpoint it names.

    Args:
      index: the opened index.
      workdir: the run folder, when it has moved since indexing (default: the one the manifest names).
      mesh: the device mesh.

    Raises:
      BadIndexError: the run's checkpoint is gone, damaged, or differs from the one the index was built with.
    """
    model = index.manifest["model"]
    workdir = workdir or model["workdir"]
    saved = model["checkpoint"]
    try:
        config = config_from_dict(index.manifest["config"])
        choice = "best" if saved["subdir"] != checkpoint.CHECKPOINT_SUBDIR else "latest"
        encoder = load_run(workdir, config, choice, mesh=mesh, step=saved["step"])
    except (FileNotFoundError, checkpoint.CheckpointError) as e:
        where = os.path.join(workdir, saved["subdir"], str(saved["step"]))
        raise index_lib.BadIndexError(f"index {index.folder} needs checkpoint {where}: {e}") from e
    index_lib.check_same_model(model, encoder.fingerprint(), f"index {index.folder}")
    return encoder
