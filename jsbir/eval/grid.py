"""The retrieval grid: a picture of a few queries and their top-ranked gallery items, framed by correctness."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from jsbir import metrics
from jsbir.data.types import Images
from jsbir.eval.protocols import EvalSets


def _picture(images: Images, index: int) -> Image.Image:
    array = images.image[index]
    return Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array)


def retrieval_grid(sets: EvalSets, score_rows: Callable[[np.ndarray], np.ndarray], rows: int, topk: int) -> Image.Image:
    """A PNG-ready grid: one query sketch per row (distinct classes first), then its top-k gallery items, framed
    green when relevant and red otherwise.

    Args:
      sets: the evaluated queries and gallery (stored as images).
      score_rows: ``query indices -> (len, N) similarities`` of those queries (only the shown rows are scored).
      rows: how many queries to show.
      topk: how many gallery items per query.
    """
    queries, gallery = sets.queries, sets.gallery
    _, first = np.unique(queries.label, return_index=True)
    picked = np.concatenate([np.sort(first), np.setdiff1d(np.arange(len(queries)), first)])[:rows]
    order = metrics.rank(score_rows(picked))[:, :topk]
    relevant = sets.relevant(picked)
    size = queries.image.shape[1]
    cell, gap = size + 6, 10
    canvas = Image.new("RGB", (cell * (topk + 1) + gap, cell * len(picked)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (qi, ranked) in enumerate(zip(picked, order, strict=True)):
        canvas.paste(_picture(queries, qi), (3, r * cell + 3))
        for c, gi in enumerate(ranked):
            x, y = gap + (c + 1) * cell, r * cell
            colour = (0, 170, 0) if relevant[r, gi] else (210, 0, 0)
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=colour)
            canvas.paste(_picture(gallery, gi), (x + 3, y + 3))
    return canvas
