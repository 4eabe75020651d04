"""tensorflow-datasets builders for Sketchy-Extended and for any ``photo/<class>`` + ``sketch/<class>`` folder.

Nothing is downloaded: ``root`` is the folder the user unpacked. Accepted layouts, the first match wins::

    sketches: sketch/tx_000000000000/<class>/*.png   (Sketchy release; also the SAKE ``*_ready`` folders)
              sketch/<class>/*                        (plain layout, e.g. ../shared/data/sketchy_mini)
    photos:   extended_photo/<class>/*                (Sketchy-Extended: the 73,002 photos)
              photo/tx_000000000000/<class>/*         (also ``photo/tx_000000000000_ready``)
              photo/<class>/*

Pairing: the sketch ``n02691156_10151-3.png`` was drawn from the photo ``n02691156_10151.jpg`` of the same class, so
both get the same ``instance_id``; sketches whose photo is absent get -1. The generic ``folder`` dataset
(:class:`SbirFolder`) reads ``sketch/<class>`` + ``photo/<class>`` (or ``sketches``/``photos``) with the same rule
(a sketch named ``<photo stem>``, ``<photo stem>-<k>`` or ``<photo stem>_<k>`` pairs with that photo), so a user's own
collection works as it is. Everything goes to one split, ``full`` (tfds reserves "all"); the zero-shot train/test
division happens in :mod:`jsbir.data.real`. Usage::

    from jsbir.data import records
    from jsbir.data.builders import manual, sketchy

    builder = manual.prepare(sketchy.SketchyExtended, "/data/Sketchy", "/tmp/tfds", manual.make_config(64))
    full = records.load_split(builder, "full")
"""

from __future__ import annotations

from pathlib import Path

from jsbir.data.builders import manual

_SKETCHES = ("sketch/tx_000000000000", "sketch/tx_000000000000_ready", "sketch")
_PHOTOS = ("extended_photo", "photo/tx_000000000000", "photo/tx_000000000000_ready", "photo")


class SketchyExtended(manual.ManualSbirBuilder):
    """Sketchy-Extended (Sangkloy et al. 2016; Liu et al. 2017): 125 classes of sketches and photos."""

    name = "jsbir_sketchy"
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unpack Sketchy (https://sketchy.eye.gatech.edu/) and the extended photos so that the root holds
    sketch/tx_000000000000/<class>/*.png and extended_photo/<class>/* (or photo/tx_000000000000/<class>/*),
    or the plain layout sketch/<class>/* and photo/<class>/*; set config.data.root to it.
    """

    def scan(self, root: Path):
        sketches = manual.find_folder(root, _SKETCHES, "sketches", "Sketchy")
        photos = manual.find_folder(root, _PHOTOS, "photos", "Sketchy")
        return manual.sketch_photo_items(root, sketches, photos, paired=True)


class SbirFolder(manual.ManualSbirBuilder):
    """A user's collection: ``sketch/<class>/*`` and ``photo/<class>/*``, paired by file name where they can be."""

    name = "jsbir_folder"
    KEYED_BY_ROOT = True  # a user may have several collections
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put sketches in <root>/sketch/<class>/ and photos in <root>/photo/<class>/ (any of .png .jpg .jpeg .bmp .gif
    .webp .tif); a sketch named <photo stem>-<k> or <photo stem>_<k> pairs with that photo. Set config.data.root.
    """

    def scan(self, root: Path):
        sketches = manual.find_folder(root, ("sketch", "sketches"), "sketches", "folder")
        photos = manual.find_folder(root, ("photo", "photos"), "photos", "folder")
        return manual.sketch_photo_items(root, sketches, photos, paired=True)
