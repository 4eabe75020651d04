"""tensorflow-datasets builders for the fine-grained QMUL sets: Shoe/Chair-V1 (.mat files) and Shoe/Chair-V2 (folders).

Nothing is downloaded. One class per set; every sketch pairs with one photo through ``instance_id``, and the
official train/test division is kept as the tfds splits ``train`` and ``test``.

V1 (Yu et al., CVPR 2016, as released with the DSSA code, e.g. ../shared/data/qmul_shoes_v1)::

    <subset>_sketch_db_{train,test}.mat   "data": uint8 (N, 256, 256) sketches
    <subset>_edge_db_{train,test}.mat     "data": uint8 (N, 256, 256) edge maps of the photos; sketch i pairs with i
    <subset>_annotation.json              optional: image/sketch file names and triplets (see load_triplets)

The edge maps are the "photos" (modality photo), as in DSSA. ``instance_id`` = the image number in the annotation
(``1.jpg`` ... train, then test) minus one: train pair i is i, test pair i is N_train + i. MATLAB v7.3 (HDF5) files
are read with h5py. The subset ("shoes", "chairs") is the file prefix and the class name; a folder holding several
needs ``config.data.subset``.

V2 (Yu et al., IJCV 2021: QMUL-Shoe-V2, QMUL-Chair-V2)::

    trainA/<photo stem>_<k>.png   sketches        trainB/<photo stem>.png   photos
    testA/...                                     testB/...

A sketch pairs with the photo of the same split whose stem it starts with (``<photo stem>_<k>`` or the stem
itself); one without a photo gets -1. The class name is ``config.data.subset`` or else the root folder's name
without a trailing "v2" ("ShoeV2" -> "shoe").

V2 as the SketchX fine-grained code bases distribute it (e.g. ../shared/data/qmul_chairs_v2), chosen when the root
holds ``photo/`` and a ``*_Coordinate`` file::

    photo/<photo>.png             RGB photos
    ChairV2_Coordinate            pickled dict: "/train/<photo>_<k>" or "/test/<photo>_<k>" -> (N, 3) float array of
                                  x, y on a 256 canvas and a pen-lift flag (jsbir.data.strokes)

The pickle is read by :func:`jsbir.data.strokes.read_stroke_file` (numpy arrays only; any other global is refused
before it runs). Each sketch is rasterised at the config's size by :func:`jsbir.data.strokes.rasterise`: black strokes
3 canvas pixels wide (``strokes.LINE_WIDTH``), round joints, drawn at 4x and box-reduced (antialiased). The split
comes from the key, each photo is its own instance (the split of its sketches; a photo no sketch names is left out),
and the sketch's ``file_name`` is ``<stroke file>/<split>/<name>``, the file and key its vector form is re-read from
(:func:`stroke_sketches`). The class name is ``config.data.subset`` or else the file's prefix without "V2_Coordinate"
("ChairV2_Coordinate" -> "chair").
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np

from jsbir.data import matfile, strokes
from jsbir.data.builders import manual

_V1_FILE = re.compile(r"^(.+)_(sketch|edge)_db_(train|test)\.mat$")


@dataclasses.dataclass(eq=False)
class QmulConfig(manual.ManualConfig):
    """Image side and the subset (V1 file prefix, e.g. "shoes").

    Attributes:
      size: output side in pixels.
      subset: V1: the file prefix; V2: the class name ("" derives it from the root).
    """

    subset: str = ""


def make_config(size: int = 64, subset: str = "") -> QmulConfig:
    """A config named ``s<size>`` or ``s<size>_<subset>``."""
    base = manual.make_config(size)
    if subset and not re.fullmatch(r"[A-Za-z0-9_]+", subset):
        raise ValueError(f"subset must be letters, digits and underscores, got {subset!r}")
    name = f"{base.name}_{subset}" if subset else base.name
    return QmulConfig(name=name, description=f"{base.description} {subset}".strip(), size=size, subset=subset)


def v1_subsets(root: str | Path) -> tuple[str, ...]:
    """The V1 file prefixes present in ``root`` ("shoes", "chairs")."""
    root = Path(root)
    found = {m.group(1) for p in root.iterdir() if (m := _V1_FILE.match(p.name))} if root.is_dir() else set()
    return tuple(sorted(found))


def read_mat(path: Path) -> np.ndarray:
    """The uint8 ``data`` array of a QMUL .mat file, (N, H, W) or (N, H, W, C).

    Raises:
      LayoutError: no ``data`` variable, or the wrong shape.
      CorruptImageError: the file cannot be read.
    """
    try:
        data = matfile.read_variables(path, ("data",)).get("data")
    except matfile.MatFileError as err:
        raise manual.CorruptImageError(str(err)) from err
    if data is None:
        raise manual.LayoutError(f"{path} has no 'data' variable")
    if data.ndim not in (3, 4) or data.dtype != np.uint8:
        raise manual.LayoutError(f"{path}: 'data' must be uint8 (N, H, W[, C]), got {data.dtype} {data.shape}")
    return data


def load_triplets(root: str | Path, subset: str) -> dict[str, list[np.ndarray]]:
    """The annotated triplets of ``<subset>_annotation.json``: per split, per sketch, an (M, 2) int array of photo
    indices (0-based, within the split) as stored; in Yu et al.'s annotation the first photo of each pair was judged
    more similar to the sketch than the second (our reading; check before relying on the order)."""
    with (Path(root) / f"{subset}_annotation.json").open() as f:
        annotation = json.load(f)
    return {
        split: [np.asarray(t, np.int64).reshape(-1, 2) for t in annotation[split]["triplets"]]
        for split in ("train", "test")
    }


class QmulV1(manual.ManualSbirBuilder):
    """QMUL Shoe-V1 / Chair-V1: paired sketches and photo edge maps from .mat files."""

    name = "jsbir_qmul_v1"
    SPLITS = ("train", "test")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Put <subset>_sketch_db_{train,test}.mat and <subset>_edge_db_{train,test}.mat (QMUL Shoe-V1 / Chair-V1 as
    released with the DSSA code, github.com/yuqian1023/Deep_SBIR_tf data/) in the root; set config.data.root.
    """

    def scan(self, root: Path):
        subset = self.builder_config.subset
        present = v1_subsets(root)
        if subset not in present:
            raise manual.LayoutError(
                f"{root} is not a QMUL-V1 folder for subset {subset!r}: expected {subset or '<subset>'}_sketch_db_"
                f"{{train,test}}.mat and {subset or '<subset>'}_edge_db_{{train,test}}.mat; subsets found: {present}"
            )
        items, number = [], 0
        for split in self.SPLITS:
            sketch_path, edge_path = (root / f"{subset}_{kind}_db_{split}.mat" for kind in ("sketch", "edge"))
            for path in (sketch_path, edge_path):
                if not path.is_file():
                    raise manual.LayoutError(f"{root}: missing {path.name} (QMUL-V1 subset {subset!r})")
            sketches, edges = read_mat(sketch_path), read_mat(edge_path)
            if len(sketches) != len(edges):
                raise manual.LayoutError(
                    f"{sketch_path} holds {len(sketches)} sketches but {edge_path} holds {len(edges)} edge maps"
                )
            for i in range(len(sketches)):
                pair = f"{number:08d}"
                number += 1
                for path, array, modality in ((edge_path, edges, manual.PHOTO), (sketch_path, sketches, manual.SKETCH)):
                    source = functools.partial(_row, array, i)
                    items.append(manual.Item(f"{path.name}[{i}]", subset, modality, split, source, pair))
        return (subset,), items


def _row(array: np.ndarray, i: int) -> np.ndarray:
    return array[i]


class QmulV2(manual.ManualSbirBuilder):
    """QMUL Shoe-V2 / Chair-V2: sketches trainA/testA paired by file stem with photos trainB/testB."""

    name = "jsbir_qmul_v2"
    SPLITS = ("train", "test")
    MANUAL_DOWNLOAD_INSTRUCTIONS = """
    Unpack QMUL-Shoe-V2 or QMUL-Chair-V2 so that the root holds trainA/ and testA/ (sketches <photo stem>_<k>.png)
    and trainB/ and testB/ (photos <photo stem>.png); set config.data.root to it.
    """

    def scan(self, root: Path):
        if (root / "photo").is_dir() and stroke_files(root):
            return self._scan_strokes(root)
        folders = [root / f"{split}{side}" for split in self.SPLITS for side in "AB"]
        missing = [p.name for p in folders if not p.is_dir()]
        if missing:
            raise manual.LayoutError(
                f"{root} is not a QMUL-V2 folder: expected trainA/, trainB/, testA/, testB/ (or photo/ and a "
                f"<Set>V2_Coordinate stroke file); missing {missing}"
            )
        name = self.builder_config.subset or re.sub(r"[-_]?v2$", "", root.name, flags=re.I).lower() or "object"
        items = []
        for split in self.SPLITS:
            stems = {}
            for path in manual.image_files(root / f"{split}B"):
                stems.setdefault(path.stem, f"{split}/{path.stem}")
                items.append(
                    manual.Item(manual.relative(path, root), name, manual.PHOTO, split, path, stems[path.stem])
                )
            for path in manual.image_files(root / f"{split}A"):
                pair = manual.pair_key(path.stem, stems)
                items.append(manual.Item(manual.relative(path, root), name, manual.SKETCH, split, path, pair))
        return (name,), items

    def _scan_strokes(self, root: Path):
        found = stroke_files(root)
        if len(found) > 1:
            raise manual.LayoutError(f"{root} holds several stroke files {[p.name for p in found]}: keep one")
        path = found[0]
        name = self.builder_config.subset or re.sub(r"[-_]?v2[-_]?coordinate$", "", path.name, flags=re.I).lower()
        photos = {p.stem: p for p in manual.image_files(root / "photo")}
        size = self.builder_config.size
        split_of: dict[str, str] = {}
        sketches = []
        for key, points in strokes.read_stroke_file(path).items():
            split, stem = _stroke_key(key, photos, path)
            if split_of.setdefault(stem, split) != split:
                raise manual.LayoutError(f"{path}: photo {stem!r} has sketches in both train and test ({key!r})")
            source = functools.partial(_stroke_raster, points, size)
            sketches.append(manual.Item(f"{path.name}{key}", name, manual.SKETCH, split, source, f"{split}/{stem}"))
        items = [
            manual.Item(manual.relative(photos[stem], root), name, manual.PHOTO, split, photos[stem], f"{split}/{stem}")
            for stem, split in sorted(split_of.items())
        ]
        return (name,), items + sketches


def stroke_files(root: str | Path) -> list[Path]:
    """The SketchX stroke files (``<Set>V2_Coordinate``) in ``root``."""
    return sorted(p for p in Path(root).glob("*_Coordinate") if p.is_file())


def stroke_sketches(root: str | Path, file_names) -> list[np.ndarray]:
    """The vector forms ((N, 3) x, y, pen lift) of prepared stroke sketches, from their ``file_name`` s
    (``<stroke file>/<split>/<name>``), e.g. to re-rasterise them with stroke-level augmentation.

    Raises:
      KeyError: a file name that names no sketch of the root's stroke file.
    """
    files = {}
    out = []
    for file_name in file_names:
        file_name = file_name.decode("utf-8") if isinstance(file_name, bytes) else str(file_name)
        stem, _, key = file_name.partition("/")
        if stem not in files:
            files[stem] = strokes.read_stroke_file(Path(root) / stem)
        if f"/{key}" not in files[stem]:
            raise KeyError(f"{Path(root) / stem} holds no sketch {'/' + key!r}")
        out.append(files[stem][f"/{key}"])
    return out


def _stroke_key(key: str, photos: dict[str, Path], path: Path) -> tuple[str, str]:
    """(split, photo stem) of a key ``/<split>/<photo>_<k>``; a LayoutError naming the key otherwise."""
    parts = key.split("/")
    if len(parts) != 3 or parts[0] or parts[1] not in QmulV2.SPLITS:
        raise manual.LayoutError(f"{path}: key {key!r} is not /train/<photo>_<k> or /test/<photo>_<k>")
    stem = parts[2] if parts[2] in photos else parts[2].rpartition("_")[0]
    if stem not in photos:
        raise manual.LayoutError(f"{path}: sketch {key!r} names no photo in {path.parent / 'photo'}")
    return parts[1], stem


def _stroke_raster(points: np.ndarray, size: int) -> np.ndarray:
    return strokes.rasterise(strokes.split_strokes(points), size)
