"""Image decoding for the manual-folder builders: any PIL mode to 8-bit RGB on a white background, at one size."""

from __future__ import annotations

import numpy as np
from PIL import Image


class CorruptImageError(ValueError):
    """An image file that PIL cannot decode."""


_WIDE_GREY = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535}


def _eight_bit(image: Image.Image) -> Image.Image:
    """Wide grey modes scaled to 8 bits: 16-bit ("I;16*", and "I" holding 16-bit values) by their full range,
    float ("F") from [0, 1] when it lies there, else clipped to [0, 255]. PIL's own ``convert`` would clip them,
    which turns a 16-bit image near-white."""
    array = np.asarray(image)
    if image.mode in _WIDE_GREY:
        scaled = array.astype(np.float64) * 255.0 / _WIDE_GREY[image.mode]
    elif image.mode == "I":
        top = float(array.max()) if array.size else 0.0
        scaled = array.astype(np.float64) * (255.0 / 65535.0 if top > 255 else 1.0)
    else:  # "F"
        finite = array[np.isfinite(array)]
        unit = finite.size and finite.min() >= 0.0 and finite.max() <= 1.0
        scaled = np.nan_to_num(array.astype(np.float64)) * (255.0 if unit else 1.0)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L")


def to_rgb(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 RGB from any PIL mode: alpha (also premultiplied) composited on white, grey
    replicated, 16-bit and float grey scaled to 8 bits, then a bilinear (antialiased) resize.

    Raises:
      ValueError: a mode with no RGB conversion (named).
    """
    if isinstance(image, np.ndarray):
        image = Image.fromarray(np.asarray(image, np.uint8))
    image.load()  # decode fully now: a truncated file fails here, not later
    if image.mode in _WIDE_GREY or image.mode in ("I", "F"):
        image = _eight_bit(image)
    if image.mode in ("RGBa", "La"):
        image = image.convert("RGBA")
    if image.mode in ("LAB", "HSV"):
        raise ValueError(f"image mode {image.mode} has no RGB conversion here; save the image as RGB or grey")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    image = image.convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(image, np.uint8)
