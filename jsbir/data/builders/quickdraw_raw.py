"""tensorflow-datasets builder for the raw Quick, Draw! files: per-class ``.npy`` bitmaps and ``.ndjson`` strokes.

Nothing is downloaded. The root holds Google's per-class files (https://github.com/googlecreativelab/quickdraw-dataset),
directly or in a ``sketch/`` sub-folder; a ``full_numpy_bitmap_`` / ``full_simplified_`` / ``full_raw_`` prefix
is dropped from the class name::

    <class>.npy      (N, 784) uint8, 28x28 bitmaps, white ink on black: inverted to black ink on white, resized
    <class>.ndjson   one drawing per line, {"word": ..., "drawing": [[xs, ys(, ts)], ...], ...}; a line whose
                     drawing is a single [xs, ys] stroke is read too. Strokes are rendered with PIL at any size:
                     scaled to fit with a margin, drawn at twice the size and downsampled (antialiasing).
    images/<class>/* optional photos (QuickDraw-Extended's photo folders); without them the set is sketch-only.

The files hold 100,000+ drawings per class, so the builder config caps the drawings read per class
(``max_per_class``, the first ones of each file; 0 reads all). Sketches never pair with photos: ``instance_id``
is -1. A line that is not valid JSON or has no strokes is a corrupt image (named by ``file:line``; skipped with
``skip_corrupt``). One split, ``full`` (tfds reserves "all").
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from jsbir.data.builders import manual
from jsbir.data.builders.quickdraw import PHOTO_FOLDERS

_PREFIX = re.compile(r"^full_(numpy_bitmap|simplified|raw)_")
_MARGIN = 0.08  # of the side, on each border


@dataclasses.dataclass(eq=False)
class QuickDrawRawConfig(manual.ManualConfig):
    """Image side and how many drawings to read per class.

    Attributes:
      size: output side in pixels.
      max_per_class: the first ``max_per_class`` drawings of each class (0: all of them).
    """

    max_per_class: int = 1000


def make_config(size: int = 64, max_per_class: int = 1000) -> QuickDrawRawConfig:
    """A config named ``s<size>_n<max_per_class>``."""
    base = manual.make_config(size)
    if max_per_class < 0:
        raise ValueError(f"max_per_class must be >= 0, got {max_per_class}")
    return QuickDrawRawConfig(
        name=f"{base.name}_n{max_per_class}",
        description=f"{base.description}, at most {max_per_class or 'all'} drawings per class",
        size=size,
        max_per_class=max_per_class,
    )


def render_strokes(drawing: list, size: int) -> np.ndarray:
    """Renders a Quick, Draw! drawing (list of [xs, ys(, ts)] strokes) as (size, size, 3) black-on-white uint8.

    Raises:
      ValueError: when the drawing has no usable stroke.
    """
    if drawing and drawing[0] and isinstance(drawing[0][0], int | float):
        drawing = [drawing]  # a single [xs, ys] stroke
    strokes = []
    for stroke in drawing:
        if len(stroke) < 2 or len(stroke[0]) != len(stroke[1]) or not stroke[0]:
            raise ValueError(f"a stroke needs equally long x and y lists, got {str(stroke)[:80]}")
        strokes.append(np.asarray(stroke[:2], np.float64).T)
    if not strokes:
        raise ValueError("the drawing has no strokes")
    points = np.concatenate(strokes)
    low, high = points.min(0), points.max(0)
    canvas = 2 * size
    scale = canvas * (1 - 2 * _MARGIN) / max(float((high - low).max()), 1.0)
    offset = (canvas - (high - low) * scale) / 2 - low * scale
    image = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(image)
    width = max(2, round(canvas / 64))
    for stroke in strokes:
        xy = [tuple(p) for p in stroke * scale + offset]
        if len(xy) == 1:
            (x, y), r = xy[0], width / 2
            draw.ellipse((x - r, y - r, x + r, y + r), fill=0)
        else:
            draw.line(xy, fill=0, width=width, joint="curve")
    return manual.to_rgb(image.resize((size, size), Image.Resampling.BILINEAR), size)


def _class_name(path: Path) -> str:
    return _PREFIX.sub("", path.stem)


def _bitmap(bitmaps: np.ndarray, row: int) -> np.ndarray:
    return 255 - np.asarray(bitmaps[row], np.uint8).reshape(28, 28)


class _Drawing:
    """One ndjson line, parsed and rendered when decoded (a bad line fails then, named by file:line)."""

    def __init__(self, line: str, size: int):
        self.line, self.size = line, size

    def __call__(self) -> np.ndarray:
        record = json.loads(self.line)
        if not isinstance(record, dict) or "drawing" not in record:
            raise ValueError("the line has no 'drawing'")
        try:
            return render_strokes(record["drawing"], self.size)
        except (TypeError, IndexError, KeyError) as err:  # malformed nesting: report it as a bad drawing
            raise ValueError(f"malformed drawing: {err}") from err


class QuickDrawRaw(manual.ManualSbirBuilder):
    """Quick, Draw! per-class bitmaps and stroke files, rendered at any size (optional photos)."""

    name = "jsbir_quickdraw_raw"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Download per-class files from https://console.cloud.google.com/storage/browser/quickdraw_dataset/full
    (numpy_bitmap/<class>.npy and/or simplified/<class>.ndjson) into the root (or <root>/sketch/); photos are
    optional, in <root>/images/<class>/. Set config.data.root to it.
    """

    def scan(self, root: Path):
        folder = root / "sketch" if (root / "sketch").is_dir() else root
        files = sorted(p for p in folder.iterdir() if p.suffix in (".npy", ".ndjson") and p.is_file())
        if not files:
            raise manual.LayoutError(
                f"{root} is not a QuickDraw folder: expected <class>.npy or <class>.ndjson files in {root} "
                f"or {root / 'sketch'}"
            )
        cap = self.builder_config.max_per_class or None
        by_class: dict[str, list[manual.Item]] = {}
        for path in files:
            items = by_class.setdefault(_class_name(path), [])
            left = None if cap is None else cap - len(items)
            if left is not None and left <= 0:
                continue
            items.extend(self._file_items(root, path, left))
        for name, items in by_class.items():
            if not items:
                raise manual.LayoutError(f"{folder} holds no drawings of class {name!r}")
        names = tuple(sorted(by_class))
        items = [item for name in names for item in by_class[name]]
        photo_dir = next((root / p for p in PHOTO_FOLDERS if (root / p).is_dir()), None)
        for name, class_dir in manual.class_folders(photo_dir).items() if photo_dir else ():
            if name not in by_class:
                raise manual.LayoutError(f"photo class folder {class_dir} has no drawings in {folder}")
            items += [
                manual.Item(manual.relative(p, root), name, manual.PHOTO, "full", p)
                for p in manual.image_files(class_dir)
            ]
        return names, items

    def _file_items(self, root: Path, path: Path, limit: int | None) -> list[manual.Item]:
        name, rel = _class_name(path), manual.relative(path, root)
        if path.suffix == ".npy":
            try:
                bitmaps = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise manual.CorruptImageError(f"cannot read QuickDraw bitmaps {path}: {err}") from err
            if bitmaps.ndim != 2 or bitmaps.shape[1] != 784:
                raise manual.LayoutError(f"{path}: expected (N, 784) 28x28 bitmaps, got shape {bitmaps.shape}")
            rows = range(len(bitmaps) if limit is None else min(limit, len(bitmaps)))
            return [
                manual.Item(f"{rel}[{i}]", name, manual.SKETCH, "full", functools.partial(_bitmap, bitmaps, i))
                for i in rows
            ]
        with path.open(encoding="utf-8") as f:
            lines = [(n, line) for n, line in enumerate(itertools.islice(f, limit), 1) if line.strip()]
        size = self.builder_config.size
        return [manual.Item(f"{rel}:{n}", name, manual.SKETCH, "full", _Drawing(line, size)) for n, line in lines]
