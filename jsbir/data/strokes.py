"""Vector (stroke) sketches: a numpy-only safe reader of stroke pickles, rasterising, and stroke-level augmentation.

The SketchX fine-grained code bases distribute QMUL Shoe-V2 and Chair-V2 sketches as a pickled dict
(``ShoeV2_Coordinate``, ``ChairV2_Coordinate``): key ``/train/<photo>_<k>`` or ``/test/<photo>_<k>``, value an (N, 3)
float array of points, absolute x and y on a 256 x 256 canvas and a pen-lift flag that is 1 on the last point of
each stroke.

:func:`read_stroke_file` reads such a file with a ``pickle.Unpickler`` whose ``find_class`` admits only what
numpy arrays and scalars are rebuilt from (``_reconstruct``, ``ndarray``, ``dtype``, ``scalar``, ``_frombuffer``, and
``_codecs.encode`` limited to latin1 strings, which protocol 2 writes an array's bytes with).
Any other global (``posix.system``, ``builtins.eval``, ...) stops the load with :class:`UnsafePickleError` naming the
file and the global, before anything runs: pickle resolves a global before it can call it.

:func:`rasterise` draws black strokes on white, antialiased: each stroke is drawn as a polyline ``line_width``
canvas pixels wide with round joints and caps (a disc at every point) on a canvas ``supersample`` times larger, which
is then reduced to ``size`` by box averaging (each output pixel the mean of the supersampled pixels it covers).

:func:`drop_strokes` and :func:`jitter_strokes` are the stroke-level augmentations of small vector sketch sets:
removing whole strokes, and shifting each stroke by its own small random offset.
"""

from __future__ import annotations

import importlib
import io
import os
import pickle
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

CANVAS = 256  # the coordinate frame of the SketchX stroke files
LINE_WIDTH = 3.0  # stroke width in canvas pixels (about a pen's width on the 256 canvas the sketches were drawn on)
SUPERSAMPLE = 4  # drawn at 4x and box-reduced: 16 samples a pixel

# (module, name) pairs numpy arrays and scalars are pickled with; numpy 1.x writes numpy.core, 2.x numpy._core.
_NUMPY_GLOBALS = frozenset(
    (module, name)
    for core in ("numpy.core", "numpy._core")
    for module, name in (
        (f"{core}.multiarray", "_reconstruct"),
        (f"{core}.multiarray", "scalar"),
        (f"{core}.numeric", "_frombuffer"),
    )
) | {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # protocol 2 writes bytes via _codecs.encode


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles use it for an array's bytes, limited to that use."""
    if encoding != "latin1" or not isinstance(text, str):
        raise UnsafePickleError(f"_codecs.encode with {encoding!r}: only latin1 strings are admitted")
    return text.encode("latin1")


class UnsafePickleError(pickle.UnpicklingError):
    """A stroke file names a global other than numpy's array and scalar rebuilders; refused before anything ran."""


class StrokeFileError(ValueError):
    """A stroke file that is not a dict of (N, 3) point arrays; the message names the file and key."""


class _NumpyUnpickler(pickle.Unpickler):
    """Resolves only numpy's array and scalar rebuilders; anything else is refused."""

    def __init__(self, file, where: str):
        super().__init__(file)
        self._where = where

    def find_class(self, module: str, name: str):
        if (module, name) not in _NUMPY_GLOBALS:
            raise UnsafePickleError(
                f"{self._where}: refusing global {module}.{name} (a stroke file holds numpy arrays only)"
            )
        if module == "numpy":
            return getattr(np, name)
        if module == "_codecs":
            return _latin1
        # numpy 2 keeps numpy.core as a deprecated alias of numpy._core (resolve there); numpy 1 has numpy.core only
        for candidate in (
            module.replace("numpy.core", "numpy._core", 1),
            module.replace("numpy._core", "numpy.core", 1),
        ):
            try:
                return getattr(importlib.import_module(candidate), name)
            except ImportError:
                continue
        raise UnsafePickleError(f"{self._where}: {module}.{name} is not in this numpy")


def read_stroke_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The sketches of a stroke pickle, by key, as float64 (N, 3) arrays (x, y, pen lift).

    Args:
      path: the pickle (e.g. ``ChairV2_Coordinate``).

    Returns:
      key -> points, in the file's key order.

    Raises:
      UnsafePickleError: the pickle names a global other than numpy's rebuilders (nothing of it has run).
      StrokeFileError: the file is not a pickle of a dict of str -> (N, 3) numeric arrays with N >= 1.
    """
    with open(path, "rb") as f:
        data = f.read()
    try:
        loaded = _NumpyUnpickler(io.BytesIO(data), str(path)).load()
    except UnsafePickleError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as err:
        raise StrokeFileError(f"{path}: not a readable stroke pickle ({type(err).__name__}: {err})") from err
    if not isinstance(loaded, dict):
        raise StrokeFileError(f"{path}: expected a dict of sketches, got {type(loaded).__name__}")
    sketches = {}
    for key, points in loaded.items():
        if not isinstance(key, str):
            raise StrokeFileError(f"{path}: key {key!r} is not a string")
        points = np.asarray(points)
        if points.ndim != 2 or points.shape[1] != 3 or not len(points) or points.dtype.kind not in "iuf":
            raise StrokeFileError(
                f"{path}[{key!r}]: expected a numeric (N, 3) array, got {points.dtype} {points.shape}"
            )
        if not np.isfinite(points).all():
            raise StrokeFileError(f"{path}[{key!r}]: holds non-finite coordinates")
        sketches[key] = points.astype(np.float64)
    return sketches


def split_strokes(points: np.ndarray) -> list[np.ndarray]:
    """The strokes of an (N, 3) point array: (n, 2) x, y arrays, each ending at a point whose pen-lift flag is set
    (a trailing run without one is a stroke too)."""
    ends = np.flatnonzero(points[:, 2] > 0.5) + 1
    pieces = np.split(points[:, :2], ends)
    return [p for p in pieces if len(p)]


def rasterise(
    strokes: Sequence[np.ndarray],
    size: int = CANVAS,
    *,
    canvas: int = CANVAS,
    line_width: float = LINE_WIDTH,
    supersample: int = SUPERSAMPLE,
) -> np.ndarray:
    """Black strokes on white, antialiased (module docstring).

    Args:
      strokes: (n, 2) x, y arrays in canvas coordinates.
      size: the output side in pixels.
      canvas: the side of the coordinate frame (scaled to ``size``).
      line_width: stroke width in canvas pixels.
      supersample: drawing resolution over ``size`` before the box reduction.

    Returns:
      uint8 (size, size) greyscale, 255 = paper.
    """
    big = size * supersample
    scale = big / canvas
    width = max(1.0, line_width * scale)
    image = Image.new("L", (big, big), 255)
    draw = ImageDraw.Draw(image)
    radius = width / 2
    for stroke in strokes:
        # PIL centres a width-w line on integer pixel indices; a coordinate c covers [c - w/2, c + w/2) when it is
        # drawn at index c - 0.5 (pixel i spans [i, i + 1)), so the raster is symmetric about the true coordinate
        xy = [(float(x), float(y)) for x, y in np.asarray(stroke, np.float64)[:, :2] * scale - 0.5]
        if len(xy) > 1:
            draw.line(xy, fill=0, width=int(round(width)))
        for x, y in xy:  # round joints and caps; a one-point stroke is a dot
            draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=0)
    if supersample > 1:
        image = image.reduce(supersample)  # box filter: the mean of each supersample x supersample block
    return np.asarray(image, np.uint8)


def drop_strokes(strokes: Sequence[np.ndarray], rate: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Each stroke removed with probability ``rate``; when all would go, one drawn uniformly is kept, so a sketch
    never becomes blank.

    Args:
      strokes: the sketch's strokes.
      rate: drop probability in [0, 1].
      rng: the random source.
    """
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"stroke drop rate must be in [0, 1], got {rate}")
    keep = rng.random(len(strokes)) >= rate
    if len(strokes) and not keep.any():
        keep[rng.integers(len(strokes))] = True
    return [s for s, k in zip(strokes, keep, strict=True) if k]


def jitter_strokes(strokes: Sequence[np.ndarray], sigma: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Each stroke translated by its own offset drawn from N(0, sigma^2) per axis, in canvas pixels.

    Args:
      strokes: the sketch's strokes.
      sigma: the offset's standard deviation; 0 leaves the sketch as it is.
      rng: the random source.
    """
    if sigma < 0:
        raise ValueError(f"stroke jitter sigma must be >= 0, got {sigma}")
    offsets = rng.normal(0.0, sigma, (len(strokes), 2)) if sigma else np.zeros((len(strokes), 2))
    return [np.asarray(s, np.float64)[:, :2] + o for s, o in zip(strokes, offsets, strict=True)]


def augmented_raster(
    points: np.ndarray, size: int, rng: np.random.Generator, *, drop_rate: float = 0.0, jitter: float = 0.0
) -> np.ndarray:
    """A sketch's (N, 3) points rasterised at ``size`` after :func:`drop_strokes` and :func:`jitter_strokes`, as
    uint8 (size, size, 3) RGB (the layout of every prepared image)."""
    strokes = jitter_strokes(drop_strokes(split_strokes(points), drop_rate, rng), jitter, rng)
    return np.repeat(rasterise(strokes, size)[..., None], 3, axis=-1)


class StrokeImages:
    """Rasterised training sketches that keep their vector form, so the training stream can draw each example with
    stroke dropout and jitter (:meth:`augmented`).

    Behaves as the (N, size, size, 3) uint8 array of the plain rasters where the data layer needs one (``len``,
    ``shape``, ``ndim``, ``dtype``; indexing with a slice, integer array or mask selects rows and returns another
    ``StrokeImages``; an integer, a tuple or ``numpy.asarray`` reads the plain rasters), which come from ``plain``
    (e.g. the prepared records' ``RecordImages``, the same rasters) when given, else are drawn here.

    Args:
      sketches: each row's (N, 3) points (x, y, pen lift) on the 256 canvas.
      size: the raster side.
      drop_rate: :func:`drop_strokes`' rate.
      jitter: :func:`jitter_strokes`' sigma in canvas pixels.
      plain: optional array-like of the plain rasters, row-aligned with ``sketches``.
    """

    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, sketches: Sequence[np.ndarray], size: int, *, drop_rate: float, jitter: float, plain=None):
        if plain is not None and len(plain) != len(sketches):
            raise ValueError(f"{len(sketches)} vector sketches but {len(plain)} plain rasters")
        self._sketches, self._plain = list(sketches), plain
        self.size, self.drop_rate, self.jitter = size, drop_rate, jitter
        self.shape = (len(self._sketches), size, size, 3)
        drop_strokes([], drop_rate, np.random.default_rng(0))  # validate the settings now, not inside tf.data
        jitter_strokes([], jitter, np.random.default_rng(0))

    def __len__(self) -> int:
        return len(self._sketches)

    def __getitem__(self, key):
        if isinstance(key, tuple):  # (rows, then pixels), as numpy
            rows, pixels = key[0], key[1:]
            if isinstance(rows, (int, np.integer)):
                return self[rows][pixels]
            return np.asarray(self[rows])[(slice(None), *pixels)]
        if isinstance(key, (int, np.integer)):
            if self._plain is not None:
                return np.asarray(self._plain[int(key)])
            return augmented_raster(self._sketches[key], self.size, np.random.default_rng(0))
        rows = np.arange(len(self))[key]
        plain = None if self._plain is None else self._plain[rows]
        chosen = [self._sketches[i] for i in rows]
        return StrokeImages(chosen, self.size, drop_rate=self.drop_rate, jitter=self.jitter, plain=plain)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        del copy  # always a new array
        if self._plain is not None:
            out = np.asarray(self._plain)
        else:
            out = np.zeros(self.shape, np.uint8)
            for i in range(len(self)):
                out[i] = self[i]
        return out if dtype is None else out.astype(dtype)

    def augmented(self, row: int, key: np.ndarray) -> np.ndarray:
        """Row ``row`` drawn with stroke dropout and jitter, the randomness a pure function of ``key`` (the training
        stream's per-example (seed, position) pair), uint8 (size, size, 3)."""
        rng = np.random.default_rng([int(k) % (1 << 63) for k in np.ravel(key)] + [0x5712])
        return augmented_raster(self._sketches[int(row)], self.size, rng, drop_rate=self.drop_rate, jitter=self.jitter)
