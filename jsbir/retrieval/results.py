"""Search results for people and programs: a printed table, a JSON document and a grid picture.

A result set is, for each query, its best ``k`` gallery items with their scores; these functions only present it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from jsbir import metrics
from jsbir.retrieval.index import Index

THUMB = 96  # pixels per side of a picture in the grid
CAPTION = 28  # pixels of text under it


def result_rows(index: Index, query_names: Sequence[str], scores: np.ndarray, ids: np.ndarray) -> list[dict[str, Any]]:
    """One dict per query: its name and its results (rank, item, score, path, label, class name), best first."""
    out = []
    for name, row_s, row_i in zip(query_names, scores, ids, strict=True):
        results = []
        for rank, (s, i) in enumerate(zip(row_s, row_i, strict=True), 1):
            label = int(index.labels[i])
            results.append({"rank": rank, "item": int(i), "score": float(s), "path": index.image_path(int(i)),
                            "label": label, "class": index.class_names[label] if label >= 0 else None})  # fmt: skip
        out.append({"query": name, "results": results})
    return out


def ranking_metrics(
    scores: np.ndarray, ids: np.ndarray, query_labels: np.ndarray, gallery_labels: np.ndarray, ks: tuple[int, ...]
) -> dict[str, float]:
    """Every class-level metric (``jsbir.metrics.retrieval_metrics``) of complete rankings: each query's every
    gallery item, best first, as a search with k = N returns them.

    Raises:
      ValueError: the rankings are not complete.
    """
    if scores.shape[1] != len(gallery_labels):
        raise ValueError(
            f"metrics need every query's whole ranking (k = {len(gallery_labels)}), got k = {scores.shape[1]}"
        )
    matrix = np.full(scores.shape, -np.inf, np.float32)
    np.put_along_axis(matrix, ids, scores.astype(np.float32), axis=1)
    return metrics.retrieval_metrics(matrix, np.asarray(query_labels), np.asarray(gallery_labels), ks=ks)


def table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table: one line per result, grouped by query."""
    lines = [f"{'query':<24} {'rank':>4} {'score':>9} {'item':>8}  {'class':<16} file"]
    for row in rows:
        for r in row["results"]:
            query = os.path.basename(row["query"])[-24:]
            lines.append(f"{query:<24} {r['rank']:>4} {r['score']:>9.4f} {r['item']:>8}  "
                         f"{str(r['class'] or '-')[:16]:<16} {r['path']}")  # fmt: skip
    return "\n".join(lines)


def write_json(path: str, document: dict[str, Any]) -> None:
    """Writes ``document`` (e.g. ``{"index": ..., "queries": rows}``) as indented JSON."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(document, f, indent=1)


def _thumbnail(path: str | None, image: np.ndarray | None = None) -> Image.Image:
    try:
        picture = Image.fromarray(image) if image is not None else Image.open(path)
        picture = picture.convert("RGB")
    except (OSError, ValueError):
        picture = Image.new("RGB", (THUMB, THUMB), (200, 200, 200))  # a file gone since indexing: a grey square
    scale = THUMB / max(picture.size)  # small dataset images are enlarged too
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.BILINEAR)


def grid(rows: list[dict[str, Any]], queries: Sequence[np.ndarray | str]) -> Image.Image:
    """A picture: one row per query (its image first), then its results, each with rank, score and file name.

    Args:
      rows: from :func:`result_rows`.
      queries: each query's image, as a (H, W, 3) uint8 array or an image file path.
    """
    columns = 1 + max(len(r["results"]) for r in rows)
    cell_w, cell_h = THUMB + 8, THUMB + CAPTION + 8
    canvas = Image.new("RGB", (columns * cell_w + 8, len(rows) * cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for y, (row, query) in enumerate(zip(rows, queries, strict=True)):
        top = y * cell_h + 4
        image = query if isinstance(query, np.ndarray) else None
        canvas.paste(_thumbnail(None if image is not None else query, image), (4, top))
        draw.text((4, top + THUMB + 2), "query", fill=(0, 0, 160))
        draw.text((4, top + THUMB + 14), os.path.basename(row["query"])[:16], fill=(0, 0, 0))
        for x, r in enumerate(row["results"], 1):
            left = x * cell_w + 8
            canvas.paste(_thumbnail(r["path"]), (left, top))
            draw.text((left, top + THUMB + 2), f"#{r['rank']}  score {r['score']:.3f}", fill=(0, 0, 0))
            draw.text((left, top + THUMB + 14), os.path.basename(r["path"])[:16], fill=(70, 70, 70))
    return canvas
