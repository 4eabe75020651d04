"""tensorflow-datasets builder for TU-Berlin-Extended: 250 classes, sketches ``png_ready/<class>`` and photos
``ImageResized_ready/<class>``.

Nothing is downloaded. The root holds the TU-Berlin sketches (Eitz et al. 2012) and the extended photos (Zhang et
al. 2016) as the zero-shot SBIR repositories (SAKE, SEM-PCYC) lay them out::

    png_ready/<class>/*.png            (also png/<class>)
    ImageResized_ready/<class>/*.JPEG  (also ImageResized/<class>)

Class folders are named with spaces ("alarm clock"), as in the SAKE split files. The photos were collected
separately from the sketches, so nothing pairs them: every ``instance_id`` is -1. One split, ``full`` (tfds
reserves "all"); the zero-shot division happens in :mod:`jsbir.data.real`.
"""

from __future__ import annotations

from pathlib import Path

from jsbir.data.builders import manual


class TuBerlinExtended(manual.ManualSbirBuilder):
    """TU-Berlin-Extended: 20,000 sketches and 204,489 photos of 250 classes."""

    name = "jsbir_tuberlin"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unpack the TU-Berlin sketches into <root>/png_ready/<class>/ and the TU-Berlin-Extended photos into
    <root>/ImageResized_ready/<class>/ (the layout of the SAKE / SEM-PCYC data preparation); set config.data.root.
    """

    def scan(self, root: Path):
        sketches = manual.find_folder(root, ("png_ready", "png"), "sketches", "TU-Berlin-Extended")
        photos = manual.find_folder(root, ("ImageResized_ready", "ImageResized"), "photos", "TU-Berlin-Extended")
        return manual.sketch_photo_items(root, sketches, photos, paired=False)
