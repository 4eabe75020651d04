"""Every image mode the decoder can meet comes out as the RGB a viewer shows: one test per mode."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from jsbir.data.builders.images import to_rgb

GREY = (100, 100, 100)


def _through_png(image: Image.Image) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    buffer.seek(0)
    return Image.open(buffer)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "LA", "RGBa", "I", "F"])
def test_eight_bit_modes_keep_their_grey(mode):
    image = Image.new("RGB", (6, 6), GREY).convert(mode)
    np.testing.assert_array_equal(to_rgb(image, 6), np.full((6, 6, 3), 100))


@pytest.mark.parametrize("mode", ["P", "PA"])
def test_palette_modes_map_through_their_palette(mode):
    image = Image.new("RGB", (6, 6), GREY).convert(mode)
    expected = np.asarray(image.convert("RGB"))  # the palette's nearest colour
    np.testing.assert_array_equal(to_rgb(image, 6), expected)


def test_bilevel_mode_is_black_and_white():
    image = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    np.testing.assert_array_equal(to_rgb(image, 2)[..., 0], [[0, 255], [255, 0]])


@pytest.mark.parametrize("value", [0, 257 * 40, 32768, 65535])
def test_sixteen_bit_grey_png_is_scaled_not_clipped(value):
    image = _through_png(Image.fromarray(np.full((4, 4), value, np.uint16)))
    assert image.mode in ("I;16", "I")  # Pillow opens 16-bit PNGs in one of these
    np.testing.assert_array_equal(to_rgb(image, 4), np.full((4, 4, 3), round(value / 257)))


def test_sixteen_bit_modes_by_name():
    array = np.full((4, 4), 65535 // 2, np.uint16)
    for mode, dtype in (("I;16", "<u2"), ("I;16L", "<u2"), ("I;16B", ">u2")):
        image = Image.frombytes(mode, (4, 4), array.astype(dtype).tobytes())
        assert image.mode == mode
        np.testing.assert_array_equal(to_rgb(image, 4)[..., 0], np.full((4, 4), 127))


def test_thirty_two_bit_int_holding_sixteen_bit_values():
    image = Image.fromarray(np.full((4, 4), 65535, np.int32), "I")
    np.testing.assert_array_equal(to_rgb(image, 4)[..., 0], np.full((4, 4), 255))


def test_float_images_in_unit_range_are_scaled():
    image = Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")
    np.testing.assert_array_equal(to_rgb(image, 4)[..., 0], np.full((4, 4), 128))


def test_alpha_is_composited_on_white():
    image = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    np.testing.assert_array_equal(to_rgb(image, 4), np.full((4, 4, 3), 255))
    premultiplied = Image.new("RGBA", (4, 4), (0, 0, 0, 0)).convert("RGBa")
    np.testing.assert_array_equal(to_rgb(premultiplied, 4), np.full((4, 4, 3), 255))


def test_modes_without_rgb_conversion_are_named():
    with pytest.raises(ValueError, match="image mode HSV has no RGB conversion"):
        to_rgb(Image.new("HSV", (4, 4)), 4)
