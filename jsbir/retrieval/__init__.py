"""Retrieval as a product: index a photo collection once with a trained model, then search it with sketches.

* :mod:`jsbir.retrieval.encoder`: a trained run restored as an encoder of images (``load_run``).
* :mod:`jsbir.retrieval.index`: the on-disk index (manifest, memory-mapped embeddings, codes; ``open_index``).
* :mod:`jsbir.retrieval.build`: indexing image files or a dataset split, streamed in batches; adding photos.
* :mod:`jsbir.retrieval.backends`: exact search backends by name (numpy, jax, faiss) and approximate FAISS IVF.
* :mod:`jsbir.retrieval.search`: a searcher over one representation of an index, and the index's own encoder.
* :mod:`jsbir.retrieval.results`: results as a table, JSON and a grid picture.
* :mod:`jsbir.retrieval.cli`: the ``evaluate``, ``index`` and ``search`` subcommands.

``docs/retrieval.md`` describes the commands, the index format and the backends' measured speed.
"""

from jsbir.retrieval.backends import BACKENDS, make_backend
from jsbir.retrieval.build import add_files, index_files, index_split, list_images, read_images, readable_images
from jsbir.retrieval.encoder import Encoder, load_run
from jsbir.retrieval.index import BadIndexError, Index, open_index
from jsbir.retrieval.search import REPRESENTATIONS, Searcher, get_searcher, load_encoder

__all__ = [
    "BACKENDS",
    "REPRESENTATIONS",
    "BadIndexError",
    "Encoder",
    "Index",
    "Searcher",
    "add_files",
    "get_searcher",
    "index_files",
    "index_split",
    "list_images",
    "load_encoder",
    "load_run",
    "make_backend",
    "open_index",
    "read_images",
    "readable_images",
]
