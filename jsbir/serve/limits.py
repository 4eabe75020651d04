"""Request validation for the draw-and-search server: bounded body reads, safe image decoding, item ids.

Every refusal is a :class:`RequestError` carrying the HTTP status and a one-line message, which the app turns
into a JSON error. Nothing here touches the file system: item ids are parsed into integers and checked against
the gallery's size, so no text from a request can become a path.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import AsyncIterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_UPLOAD_BYTES = 2 * 1024 * 1024
MAX_SIDE = 4096
BODY_TIMEOUT_S = 10.0
# Content types a sketch may arrive as, and the decoders PIL may use for them (never every plugin PIL has).
IMAGE_TYPES = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF", "image/bmp": "BMP"}


class RequestError(Exception):
    """A request the server refuses.

    Args:
      status: the HTTP status code (400, 404, 408, 413, 415, 422).
      message: what was wrong, for the JSON error body.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def check_declared_length(header: str | None, limit: int = MAX_UPLOAD_BYTES) -> None:
    """Refuses a body by its Content-Length header before any of it is read.

    Args:
      header: the Content-Length header, or None when the client sent none (a chunked body).
      limit: the largest body accepted, in bytes.

    Raises:
      RequestError: 400 for a malformed length, 413 for one over ``limit``.
    """
    if header is None:
        return
    if not header.isdigit():
        raise RequestError(400, f"malformed Content-Length {header[:40]!r}")
    if int(header) > limit:
        raise RequestError(413, f"the upload is {int(header)} bytes; the limit is {limit}")


async def read_limited(
    chunks: AsyncIterator[bytes], limit: int = MAX_UPLOAD_BYTES, timeout_s: float = BODY_TIMEOUT_S
) -> bytes:
    """Reads a request body, stopping as soon as it passes ``limit`` bytes or ``timeout_s`` seconds.

    The Content-Length header can lie or be absent, so the running total is checked on every chunk; a client
    that trickles its body is cut off by the timeout instead of holding a worker.

    Args:
      chunks: the body as it streams in (Starlette's ``request.stream()``).
      limit: the largest body accepted, in bytes.
      timeout_s: how long the whole body may take to arrive.

    Returns:
      The body.

    Raises:
      RequestError: 413 past ``limit``, 408 past ``timeout_s``, 400 for an empty body.
    """
    body = bytearray()

    async def collect() -> None:
        async for chunk in chunks:
            body.extend(chunk)
            if len(body) > limit:
                raise RequestError(413, f"the upload is over the limit of {limit} bytes")

    try:
        await asyncio.wait_for(collect(), timeout_s)
    except TimeoutError:
        raise RequestError(408, f"the upload took longer than {timeout_s:g} s") from None
    if not body:
        raise RequestError(400, "the request has no image in its body")
    return bytes(body)


def check_image_type(content_type: str | None) -> str:
    """The media type of a sketch upload, refused unless it is one of :data:`IMAGE_TYPES`.

    Args:
      content_type: the request's Content-Type header (parameters after ``;`` are ignored).

    Returns:
      The media type, lower case.

    Raises:
      RequestError: 415 for any other type, or none.
    """
    kind = (content_type or "").split(";", 1)[0].strip().lower()
    if kind not in IMAGE_TYPES:
        raise RequestError(415, f"Content-Type {kind or 'none'!r} is not one of {sorted(IMAGE_TYPES)}")
    return kind


def decode_sketch(data: bytes, content_type: str | None, max_side: int = MAX_SIDE) -> np.ndarray:
    """Decodes an uploaded sketch into an RGB array, transparent parts drawn on white.

    The size in the image's header is checked before any pixel is decoded, so a small file that claims huge
    dimensions (a decompression bomb) is refused without allocating its pixels.

    Args:
      data: the encoded image.
      content_type: the request's Content-Type (parameters after ``;`` are ignored).
      max_side: the largest width or height accepted.

    Returns:
      (H, W, 3) uint8 array.

    Raises:
      RequestError: 415 for a type that is not an accepted image or bytes no accepted decoder reads, 422 for an
        image too large or empty, 400 for image data that is damaged.
    """
    check_image_type(content_type)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=sorted(set(IMAGE_TYPES.values())))
            width, height = image.size
            if not (0 < width <= max_side and 0 < height <= max_side):
                raise RequestError(422, f"the image is {width}x{height}; at most {max_side}x{max_side} is accepted")
            image.load()
    except UnidentifiedImageError:
        raise RequestError(415, "the body is not an image in an accepted format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise RequestError(422, f"the image has too many pixels: {e}") from None
    except (OSError, SyntaxError, ValueError) as e:  # truncated or corrupt data inside a valid header
        raise RequestError(400, f"the image data is damaged: {e}") from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "P", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def parse_item(text: str, num_items: int) -> int:
    """A gallery item id from a URL segment.

    Args:
      text: the segment, as routed (already percent-decoded).
      num_items: the gallery's size.

    Returns:
      The id, in ``[0, num_items)``.

    Raises:
      RequestError: 400 when ``text`` is not a plain non-negative decimal integer, 404 when no item has that id.
    """
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise RequestError(400, f"an item id is a non-negative integer, not {text[:40]!r}")
    item = int(text)
    if item >= num_items:
        raise RequestError(404, f"no item {item}; the gallery has {num_items}")
    return item


def parse_k(text: str | None, default: int, most: int) -> int:
    """How many results a search asks for.

    Args:
      text: the ``k`` query parameter, or None for ``default``.
      default: the server's default.
      most: the largest allowed.

    Raises:
      RequestError: 422 when ``text`` is not an integer in ``[1, most]``.
    """
    if text is None:
        return min(default, most)
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= most:
        raise RequestError(422, f"k must be an integer from 1 to {most}, not {text[:40]!r}")
    return int(text)
