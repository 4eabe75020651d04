"""tensorflow-datasets builder for QuickDraw-Extended (Dey et al., Doodle to Search, CVPR 2019): 110 classes.

Nothing is downloaded. The root holds::

    sketch/<class>/*.png   (also sketches/<class>, QuickDraw_sketches_final/<class>)
    images/<class>/*.jpg   (also photo/<class>, QuickDraw_images_final/<class>)

Some class folders have spaces ("cruise ship") where the Doodle2Search zero-shot file writes underscores
("palm_tree"); the split matching in :mod:`jsbir.data.splits` treats spaces and underscores alike. The sketches come
from the Quick, Draw! game and the photos from ImageNet/Flickr, so nothing pairs them: every ``instance_id`` is -1.
One split, ``full`` (tfds reserves "all"); the zero-shot division happens in :mod:`jsbir.data.real`.
"""

from __future__ import annotations

from pathlib import Path

from jsbir.data.builders import manual

SKETCH_FOLDERS = ("sketch", "sketches", "QuickDraw_sketches_final")
PHOTO_FOLDERS = ("images", "photo", "QuickDraw_images_final")


class QuickDrawExtended(manual.ManualSbirBuilder):
    """QuickDraw-Extended: about 330,000 sketches and 204,000 photos of 110 classes."""

    name = "jsbir_quickdraw"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unpack QuickDraw-Extended (https://github.com/sounakdey/doodle2search) so that the root holds
    sketch/<class>/ (or QuickDraw_sketches_final/<class>/) and images/<class>/ (or QuickDraw_images_final/<class>/);
    set config.data.root to it.
    """

    def scan(self, root: Path):
        sketches = manual.find_folder(root, SKETCH_FOLDERS, "sketches", "QuickDraw-Extended")
        photos = manual.find_folder(root, PHOTO_FOLDERS, "photos", "QuickDraw-Extended")
        return manual.sketch_photo_items(root, sketches, photos, paired=False)
