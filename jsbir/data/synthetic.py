"""Procedural zero-shot SBIR data: filled, textured "photos" and hand-drawn-looking "sketches".

A class is a small shape program: two or three primitives (circle, star, ring, ...) placed by an
arrangement (beside, above, diagonal, inside, around, row), named like "star-inside-ring". Each
(class, instance, seed) fixes a pose; the photo and the sketch of that instance share it, so
instance-level pairs exist. Photos are coloured, textured shapes on a cluttered gradient;
sketches are thin black wobbly outlines on white with dropped and over-drawn strokes, so the domain
gap is real.
Class side information is built from the programs, so unseen classes relate to seen ones through
shared primitives and arrangements, as word vectors relate real classes.

Everything is drawn with PIL.ImageDraw on a 2x canvas and box-downsampled, deterministic by seed
(numpy SeedSequence, never Python's hash()), and needs no download. This module holds the
catalogue, the side information and the seeding; the drawing itself lives in
`jsbir.data.synthetic_render`.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator

import numpy as np

from jsbir.data.synthetic_render import (
    SLOTS,
    SYMMETRIC,
    make_pose,
    noise_bank,
    render_photo,
    render_sketch,
)


@dataclasses.dataclass(frozen=True)
class ShapeClass:
    """A shape program: primitives in role order and how they are arranged.

    For "inside" the primitives are (inner, outer); for "around" (satellite, centre); for the
    symmetric arrangements (beside, above, diagonal, row) their order is drawn per instance.
    """

    name: str
    primitives: tuple[str, ...]
    arrangement: str


# Hand-set: corners/8, roundness, symmetry order/8, convex, hole, elongation, spikes, fill.
_ATTRIBUTES = {
    "circle": (0.0, 1.0, 1.0, 1, 0, 0.0, 0.0, 1.0),
    "square": (0.5, 0.0, 0.5, 1, 0, 0.0, 0.0, 1.0),
    "triangle": (0.375, 0.0, 0.375, 1, 0, 0.1, 0.3, 0.5),
    "star": (1.25, 0.0, 0.625, 0, 0, 0.0, 1.0, 0.4),
    "cross": (1.5, 0.0, 0.5, 0, 0, 0.0, 0.2, 0.55),
    "ring": (0.0, 1.0, 1.0, 0, 1, 0.0, 0.0, 0.7),
    "crescent": (0.25, 0.7, 0.125, 0, 0, 0.5, 0.6, 0.35),
    "hexagon": (0.75, 0.4, 0.75, 1, 0, 0.0, 0.0, 0.9),
    "diamond": (0.5, 0.0, 0.25, 1, 0, 0.6, 0.4, 0.5),
    "arrow": (0.875, 0.0, 0.125, 0, 0, 0.7, 0.5, 0.45),
    "heart": (0.125, 0.8, 0.125, 0, 0, 0.1, 0.2, 0.7),
    "semicircle": (0.25, 0.6, 0.125, 1, 0, 0.5, 0.0, 0.8),
}
PRIMITIVES: tuple[str, ...] = tuple(_ATTRIBUTES)

# What each arrangement means geometrically for the side information (parts/3, width, height,
# nesting); where its roles sit in the picture is synthetic_render.SLOTS.
_GEOMETRY = {
    "beside": (0.67, 1.0, 0.0, 0.0),
    "above": (0.67, 0.0, 1.0, 0.0),
    "diagonal": (0.67, 0.7, 0.7, 0.0),
    "inside": (0.67, 0.0, 0.0, 1.0),
    "around": (0.67, 0.6, 0.6, 0.5),
    "row": (1.0, 1.0, 0.0, 0.0),
}
ARRANGEMENTS: tuple[str, ...] = tuple(SLOTS)

# The fixed catalogue, in label order: "arrangement: primitives, primitives, ...".
_CATALOGUE = """
beside: circle square, triangle star, heart cross, ring diamond, arrow hexagon
beside: crescent semicircle, star circle
above: square triangle, diamond heart, cross ring, hexagon crescent, semicircle arrow
above: circle star, heart hexagon
inside: star ring, circle square, cross circle, diamond hexagon, heart square
inside: triangle circle, crescent ring
diagonal: circle triangle, star square, arrow ring, crescent cross, hexagon diamond
diagonal: heart semicircle
around: circle star, triangle square, diamond circle, star hexagon, cross heart
around: semicircle ring, arrow circle
row: circle square triangle, star heart cross, ring diamond arrow
row: hexagon crescent semicircle, circle star diamond, square heart ring
"""


def _class_name(primitives: tuple[str, ...], arrangement: str) -> str:
    if arrangement == "row":
        return "-".join((*primitives, "row"))
    return f"{primitives[0]}-{arrangement}-{primitives[1]}"


def _parse(catalogue: str) -> tuple[ShapeClass, ...]:
    classes = []
    for line in catalogue.strip().splitlines():
        arrangement, programs = line.split(":")
        for program in programs.split(","):
            prims = tuple(program.split())
            classes.append(ShapeClass(_class_name(prims, arrangement), prims, arrangement))
    return tuple(classes)


CLASSES: tuple[ShapeClass, ...] = _parse(_CATALOGUE)
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in CLASSES)
# Every unseen class's primitives and arrangement also occur in seen ones: transfer is possible.
UNSEEN_CLASSES: tuple[str, ...] = tuple(
    """star-beside-circle heart-above-hexagon crescent-inside-ring triangle-inside-circle
    star-diagonal-square heart-diagonal-semicircle cross-around-heart arrow-around-circle
    circle-star-diamond-row square-heart-ring-row""".split()
)
MODALITIES: tuple[str, ...] = ("photo", "sketch")
TEST_INSTANCE_OFFSET = 100_000  # test poses come from instances no train split can reach
INSTANCE_ID_STRIDE = 1_000_000  # instance_id = label * stride + instance
_POSE_STREAM = len(MODALITIES)  # the pose has its own random stream, shared by both modalities
_CLASS_INDEX = {c: i for i, c in enumerate(CLASSES)}


def side_information() -> np.ndarray:
    """Class side vectors derived from the shape programs, in CLASSES order.

    Each row concatenates a bag of primitives, the standardised attributes of the "major" role
    (outer, centre, or the mean for symmetric arrangements) and of the "minor" role, an arrangement
    one-hot plus its geometry, and fixed per-class noise standing in for the idiosyncrasy of word
    vectors. Rows are L2-normalised.

    Returns:
        float32 array of shape (len(CLASSES), 48).
    """
    attrs = np.array([_ATTRIBUTES[p] for p in PRIMITIVES], np.float32)
    attrs = (attrs - attrs.mean(0)) / (attrs.std(0) + 1e-6)  # so no attribute dominates the cosine
    index = {p: i for i, p in enumerate(PRIMITIVES)}
    rows = []
    for c in CLASSES:
        bag = np.zeros(len(PRIMITIVES), np.float32)
        bag[[index[p] for p in c.primitives]] = 1.0
        if c.arrangement in SYMMETRIC:
            major = minor = attrs[[index[p] for p in c.primitives]].mean(0)
        else:
            minor, major = attrs[index[c.primitives[0]]], attrs[index[c.primitives[1]]]
        onehot = np.eye(len(ARRANGEMENTS), dtype=np.float32)[ARRANGEMENTS.index(c.arrangement)]
        noise = np.random.default_rng(zlib.crc32(c.name.encode())).normal(0.0, 0.3, 10)
        geometry = _GEOMETRY[c.arrangement]
        rows.append(np.concatenate([bag, 0.35 * major, 0.35 * minor, onehot, geometry, noise]))
    side = np.asarray(rows, np.float32)
    return side / np.linalg.norm(side, axis=1, keepdims=True)


def _rng(shape_class: ShapeClass, instance: int, seed: int, stream: int) -> np.random.Generator:
    if seed < 0 or instance < 0:
        raise ValueError("seed and instance must be non-negative")
    index = _CLASS_INDEX.get(shape_class)
    if index is None:  # a class outside the catalogue still gets a stable, distinct stream
        index = 1_000 + zlib.crc32(shape_class.name.encode())
    return np.random.default_rng(np.random.SeedSequence([seed, index, instance, stream]))


def _pose(shape_class: ShapeClass, instance: int, seed: int, size: int) -> dict:
    """The pose of one instance: it depends only on (class, instance, seed), so both modalities
    of the instance share it.
    """
    rng = _rng(shape_class, instance, seed, _POSE_STREAM)
    return make_pose(shape_class.primitives, shape_class.arrangement, rng, size)


def _check(size: int) -> None:
    if not 32 <= size <= 256:
        raise ValueError(f"size must be in [32, 256], got {size}")


def render(
    shape_class: ShapeClass,
    modality: str,
    instance: int,
    seed: int,
    size: int,
) -> np.ndarray:
    """Render one photo or sketch of one instance of a shape class.

    Args:
        shape_class: the class to draw (usually one of CLASSES).
        modality: "photo" or "sketch".
        instance: instance index >= 0; with the class and seed it fixes the pose.
        seed: dataset seed >= 0.
        size: output height and width in pixels, 32..256.

    Returns:
        uint8 array (size, size, 3); identical bytes for identical arguments.
    """
    _check(size)
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    stream = MODALITIES.index(modality)
    canvas = 2 * size  # supersampled, then box-filtered down: cheap antialiasing
    pose = _pose(shape_class, instance, seed, canvas)
    rng = _rng(shape_class, instance, seed, stream)
    if modality == "photo":
        photo = np.asarray(render_photo(pose, rng, canvas)[0].reduce(2), np.float32)
        ox, oy = rng.integers(0, size, 2)  # sensor noise at the output resolution
        photo += noise_bank(size)[oy : oy + size, ox : ox + size]
        return np.clip(photo, 0, 255).astype(np.uint8)
    return np.asarray(render_sketch(pose, rng, canvas).reduce(2).convert("RGB"))


def object_mask(shape_class: ShapeClass, instance: int, seed: int, size: int) -> np.ndarray:
    """The photo's object pixels (not the clutter), for tests and visualisation.

    Args:
        shape_class: the class.
        instance: instance index.
        seed: dataset seed.
        size: image size, as for render().

    Returns:
        bool array (size, size), True where the class's shapes cover the photo.
    """
    _check(size)
    pose = _pose(shape_class, instance, seed, 2 * size)
    _, mask = render_photo(pose, _rng(shape_class, instance, seed, 0), 2 * size)
    return np.asarray(mask.reduce(2)) >= 128


def generate(split: str, seed: int = 0, size: int = 64, per_class: int = 100) -> Iterator[dict]:
    """Yield every example of a split: per_class photos and per_class sketches of each class.

    Args:
        split: "train" (instances 0..per_class-1) or "test" (instances from TEST_INSTANCE_OFFSET),
            so train and test never share a pose.
        seed: dataset seed.
        size: image size.
        per_class: instances per class; each gives one photo and one sketch.

    Returns:
        Iterator of dicts with "image" (uint8 (size, size, 3)), "label", "class_name", "modality"
        and "instance_id" (label * INSTANCE_ID_STRIDE + instance, shared by the paired images).
    """
    offsets = {"train": 0, "test": TEST_INSTANCE_OFFSET}
    if split not in offsets:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not 0 <= per_class <= TEST_INSTANCE_OFFSET:
        raise ValueError(f"per_class must be in [0, {TEST_INSTANCE_OFFSET}]")
    for label, shape_class in enumerate(CLASSES):
        for k in range(per_class):
            instance = offsets[split] + k
            for modality in MODALITIES:
                yield {
                    "image": render(shape_class, modality, instance, seed, size),
                    "label": label,
                    "class_name": shape_class.name,
                    "modality": modality,
                    "instance_id": label * INSTANCE_ID_STRIDE + instance,
                }
