"""The server's one door into :mod:`jsbir.retrieval`: an index, the model it was built with, and its photos.

:class:`Engine` holds what a search needs once loaded: a function embedding one sketch, a function ranking the
gallery against an embedding, and the gallery's photo paths, labels and class names. :func:`load_engine` builds
it from an index folder; nothing else in :mod:`jsbir.serve` imports retrieval, so a change there is a change here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def resize(image: np.ndarray, size: int) -> np.ndarray:
    """A sketch as the model sees one: resized to ``size`` x ``size`` (bilinear, antialiased), the way the data
    builders resize every stored image.

    Args:
      image: (H, W, 3) uint8.
      size: the side of the result.

    Returns:
      (size, size, 3) uint8.
    """
    if image.shape[:2] == (size, size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class Engine:
    """A loaded index, ready to answer sketches.

    Attributes:
      embed: (size, size, 3) uint8 sketch -> (D,) float32 embedding, as the index's model makes it.
      rank: ((D,) embedding, k) -> ((k,) scores, (k,) gallery item ids), best first, ties by item id.
      image_size: the side of the square images the model takes.
      paths: each gallery item's photo file, absolute.
      labels: each gallery item's class id, -1 when unknown.
      class_names: the class names, by class id.
    """

    embed: Callable[[np.ndarray], np.ndarray]
    rank: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]
    image_size: int
    paths: Sequence[Path]
    labels: np.ndarray
    class_names: Sequence[str]

    @property
    def num_items(self) -> int:
        """How many photos the gallery holds."""
        return len(self.paths)

    def search(self, image: np.ndarray, k: int) -> list[dict[str, Any]]:
        """The ``k`` gallery items closest to a sketch.

        Args:
          image: (H, W, 3) uint8 sketch, dark strokes on white.
          k: how many results.

        Returns:
          Best first: dicts with ``item`` (gallery id), ``score`` (higher = closer), ``label`` and ``name``.
        """
        query = np.asarray(self.embed(resize(image, self.image_size)), dtype=np.float32)
        scores, items = self.rank(query, min(k, self.num_items))
        return [
            {
                "item": int(i),
                "score": float(s),
                "label": int(self.labels[i]),
                "name": self.class_name(int(self.labels[i])),
            }
            for s, i in zip(scores, items, strict=True)
        ]

    def class_name(self, label: int) -> str:
        """The name of class ``label``; "" for -1, an item whose class the index does not know."""
        return str(self.class_names[label]) if label >= 0 else ""

    def photo_path(self, item: int) -> Path:
        """The photo file of gallery item ``item`` (0 <= item < num_items)."""
        return self.paths[item]


def load_engine(index_dir: str | Path, backend: str | None = None) -> Engine:
    """Opens an index folder (checking its files) and restores the very checkpoint its manifest names.

    The model embeds one sketch per search, so its evaluation batch is cut to one row per device (the run's own
    batch would pad every sketch to that many rows), and it is compiled here, before the first person searches.

    Args:
      index_dir: a folder written by ``python -m jsbir.main index``.
      backend: the search backend (a name in ``jsbir.retrieval.BACKENDS``); None for the default.

    Returns:
      The engine.

    Raises:
      FileNotFoundError: no index at ``index_dir``.
      ValueError: the index, its run or its checkpoint cannot be used (``jsbir.retrieval.BadIndexError``), or an
        unknown backend.
    """
    if not Path(index_dir).is_dir():
        raise FileNotFoundError(f"no index folder {index_dir}")
    from jsbir import retrieval

    index = retrieval.open_index(index_dir)
    model = retrieval.load_encoder(index)
    model.config.eval.batch_size = model.mesh.size
    searcher = retrieval.get_searcher(index, backend)
    engine = Engine(
        embed=lambda sketch: model.embed(sketch[None], "sketch")[0],
        rank=lambda query, k: tuple(x[0] for x in searcher.search(query[None], k)),
        image_size=model.image_size,
        paths=[Path(index.image_path(i)) for i in range(len(index))],
        labels=np.asarray(index.labels),
        class_names=list(index.class_names),
    )
    engine.search(np.full((model.image_size, model.image_size, 3), 255, np.uint8), 1)
    return engine
