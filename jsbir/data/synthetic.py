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
(numpy SeedSequence, never Python's hash()), and needs no download.
"""

from __future__ import annotations

import colorsys
import dataclasses
import functools
import zlib
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageDraw


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
_CURVED = {"circle", "ring", "crescent", "heart", "semicircle"}

# Per arrangement: the role slots in the unit frame (centre x, centre y, scale), and what the
# arrangement means geometrically for the side information (parts/3, width, height, nesting).
_LAYOUTS = {
    "beside": (((-0.5, 0.0, 0.42), (0.5, 0.0, 0.42)), (0.67, 1.0, 0.0, 0.0)),
    "above": (((0.0, -0.5, 0.42), (0.0, 0.5, 0.42)), (0.67, 0.0, 1.0, 0.0)),
    "diagonal": (((-0.48, 0.48, 0.4), (0.48, -0.48, 0.4)), (0.67, 0.7, 0.7, 0.0)),
    "inside": (((0.0, 0.0, 0.4), (0.0, 0.0, 0.9)), (0.67, 0.0, 0.0, 1.0)),
    "around": (((0.8, 0.0, 0.26), (0.0, 0.0, 0.42)), (0.67, 0.6, 0.6, 0.5)),
    "row": (((-0.68, 0.0, 0.3), (0.0, 0.0, 0.3), (0.68, 0.0, 0.3)), (1.0, 1.0, 0.0, 0.0)),
}
ARRANGEMENTS: tuple[str, ...] = tuple(_LAYOUTS)
_SYMMETRIC = {"beside", "above", "diagonal", "row"}
# Inner scale (relative to the outer one) that keeps the inner shape clear of the outer's border.
_INNER_SCALE = {"ring": 0.42, "triangle": 0.36, "heart": 0.38}
_INNER_OFFSET_Y = {"triangle": 0.08, "heart": -0.08}

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
        if c.arrangement in _SYMMETRIC:
            major = minor = attrs[[index[p] for p in c.primitives]].mean(0)
        else:
            minor, major = attrs[index[c.primitives[0]]], attrs[index[c.primitives[1]]]
        onehot = np.eye(len(ARRANGEMENTS), dtype=np.float32)[ARRANGEMENTS.index(c.arrangement)]
        noise = np.random.default_rng(zlib.crc32(c.name.encode())).normal(0.0, 0.3, 10)
        geometry = _LAYOUTS[c.arrangement][1]
        rows.append(np.concatenate([bag, 0.35 * major, 0.35 * minor, onehot, geometry, noise]))
    side = np.asarray(rows, np.float32)
    return side / np.linalg.norm(side, axis=1, keepdims=True)


def _circle(n: int, r: float = 1.0, a0: float = 0.0) -> np.ndarray:
    t = a0 + np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    return np.stack([r * np.cos(t), r * np.sin(t)], 1)


@functools.lru_cache(maxsize=256)
def _contours(name: str, n: int) -> tuple[np.ndarray, ...]:
    """Closed contours of a primitive in its unit frame (radius ~1, y down); holes after the first.

    Args:
        name: primitive name.
        n: vertices used for curved outlines (sketches use fewer: abstraction).
    """
    if name == "circle":
        return (_circle(n),)
    if name == "ring":
        return (_circle(n), _circle(n, 0.55)[::-1])
    if name == "square":
        return (np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),)
    if name == "triangle":
        return (_circle(3, 1.05, -np.pi / 2) + [0.0, 0.1],)
    if name == "hexagon":
        return (_circle(6),)
    if name == "star":
        pts = _circle(10, 1.0, -np.pi / 2)
        pts[1::2] *= 0.45
        return (pts + [0.0, 0.08],)
    if name == "diamond":
        return (np.array([[0.0, -1.0], [0.62, 0.0], [0.0, 1.0], [-0.62, 0.0]]),)
    if name == "cross":  # one arm's three corners, turned four times
        a, b = 0.32, 0.95
        arm = np.array([[-a, -b], [a, -b], [a, -a]])
        return (np.concatenate([arm @ _rotation(k * np.pi / 2).T for k in range(4)]),)
    if name == "arrow":
        shaft = [[-1.0, -0.25], [0.2, -0.25], [0.2, -0.7], [1.0, 0.0]]
        return (np.array(shaft + [[0.2, 0.7], [0.2, 0.25], [-1.0, 0.25]]),)
    if name == "semicircle":
        t = np.linspace(np.pi, 2 * np.pi, max(n // 2, 4) + 1)
        return (np.stack([np.cos(t), np.sin(t) + 0.42], 1),)
    if name == "crescent":
        d, r2 = 0.45, 0.85  # the inner circle bites into the right side of the unit circle
        x = (d * d + 1 - r2 * r2) / (2 * d)
        t0, p0 = np.arccos(x), np.arctan2(np.sqrt(1 - x * x), x - d)
        outer = np.linspace(t0, 2 * np.pi - t0, max(n * 3 // 4, 5))
        inner = np.linspace(2 * np.pi - p0, p0, max(n // 2, 4))
        bite = np.stack([d + r2 * np.cos(inner), r2 * np.sin(inner)], 1)
        pts = np.concatenate([np.stack([np.cos(outer), np.sin(outer)], 1), bite])
        return (pts - [0.2, 0.0],)
    if name == "heart":
        t = np.linspace(0, 2 * np.pi, n, endpoint=False)
        y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
        pts = np.stack([16 * np.sin(t) ** 3, -y], 1)
        pts -= (pts.max(0) + pts.min(0)) / 2
        return (pts / np.abs(pts).max(),)
    raise ValueError(f"unknown primitive {name!r}")


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def _pose(shape_class: ShapeClass, instance: int, seed: int, size: int) -> dict:
    """The pose of one instance: parts (primitive, slots) and the global transform.

    Parts are listed in painting order; each slot is (x, y, scale, rotation) in the unit frame.
    It depends only on (class, instance, seed), so both modalities of an instance share it.
    """
    rng = _rng(shape_class, instance, seed, _POSE_STREAM)
    layout = _LAYOUTS[shape_class.arrangement][0]
    prims = list(shape_class.primitives)
    if shape_class.arrangement in _SYMMETRIC:
        prims = [prims[i] for i in rng.permutation(len(prims))]
    parts = []
    for prim, (x, y, scale) in zip(prims, layout, strict=True):
        jitter = rng.uniform(-0.05, 0.05, 2)
        scale, turn = scale * rng.uniform(0.9, 1.1), rng.uniform(-0.2, 0.2)
        slots = [(x + jitter[0], y + jitter[1], scale, turn)]
        if shape_class.arrangement == "around" and x != 0.0:  # three satellites on a circle
            angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
            slots = [(x * np.cos(a), x * np.sin(a), scale, turn) for a in angles]
        parts.append((prim, slots))
    if shape_class.arrangement == "inside":  # put the inner shape inside the outer one's body
        outer = shape_class.primitives[1]
        ox, oy, osc, orot = parts[1][1][0]
        ix, iy = _rotation(orot) @ [0.0, _INNER_OFFSET_Y.get(outer, 0.0) * osc]
        inner_scale = osc * _INNER_SCALE.get(outer, 0.45)
        inner = (parts[0][0], [(ox + ix, oy + iy, inner_scale, rng.uniform(-0.2, 0.2))])
        parts = [parts[1], inner]  # parts are painted in order: the outer one goes first
    scale = rng.uniform(0.28, 0.4) * size
    margin = max(0.0, size / 2 - 1.1 * scale)
    return {
        "parts": parts,
        "angle": rng.uniform(-0.26, 0.26),
        "scale": scale,
        "centre": size / 2 + rng.uniform(-margin, margin, 2),
    }


def _place(contour: np.ndarray, slot: tuple, pose: dict) -> np.ndarray:
    x, y, scale, angle = slot
    local = contour @ _rotation(angle).T * scale + [x, y]
    return local @ _rotation(pose["angle"]).T * pose["scale"] + pose["centre"]


def _flat(points: np.ndarray) -> list[float]:
    # PIL takes a flat [x0, y0, x1, y1, ...] list; far faster than a list of point tuples.
    return points.ravel().tolist()


def _rng(shape_class: ShapeClass, instance: int, seed: int, stream: int) -> np.random.Generator:
    if seed < 0 or instance < 0:
        raise ValueError("seed and instance must be non-negative")
    index = _CLASS_INDEX.get(shape_class)
    if index is None:  # a class outside the catalogue still gets a stable, distinct stream
        index = 1_000 + zlib.crc32(shape_class.name.encode())
    return np.random.default_rng(np.random.SeedSequence([seed, index, instance, stream]))


@functools.lru_cache(maxsize=8)
def _grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
    return xs, ys


@functools.lru_cache(maxsize=8)
def _noise_bank(size: int) -> np.ndarray:
    # Random crops of one fixed bank are far cheaper than fresh normals for every image.
    return np.random.default_rng(0).normal(0.0, 7.0, (2 * size, 2 * size, 3)).astype(np.float32)


def _texture(rng: np.random.Generator, colour: np.ndarray, xs: np.ndarray, ys: np.ndarray):
    """A texture over the given coordinate patch: solid, stripes, gradient or checker."""
    other = colour * rng.uniform(0.35, 0.7) if rng.random() < 0.5 else 255 - 0.5 * (255 - colour)
    phi = rng.uniform(0, np.pi)
    u = xs * np.cos(phi) + ys * np.sin(phi)
    kind = rng.integers(4)
    if kind == 0:
        t = 0.15 * u  # solid, with a little shading so it is not perfectly flat
    elif kind == 1:
        t = (np.sin(u * 2 * np.pi / rng.uniform(0.05, 0.12)) > 0).astype(np.float32)
    elif kind == 2:
        t = np.clip((u - u.min()) / (np.ptp(u) + 1e-6), 0, 1)
    else:
        cell = rng.uniform(0.04, 0.09)
        t = ((np.floor(xs / cell) + np.floor(ys / cell)) % 2).astype(np.float32)
    return colour + t[..., None] * (other - colour)


def _render_photo(
    pose: dict,
    rng: np.random.Generator,
    canvas: int,
) -> tuple[Image.Image, Image.Image]:
    """Paint the photo on the 2x canvas; returns it and the object mask (before sensor noise)."""
    xs, ys = _grid(canvas)
    # Background: a muted two-colour gradient, drawn tiny and upsampled (smooth and cheap).
    hue, phi = rng.uniform(), rng.uniform(0, 2 * np.pi)
    hues = (hue + rng.uniform(-0.15, 0.15, 2)) % 1
    sats, vals = rng.uniform(0.0, 0.35, 2), rng.uniform(0.25, 0.95, 2)
    ends = [colorsys.hsv_to_rgb(*hsv) for hsv in zip(hues, sats, vals, strict=True)]
    ends = np.array(ends, np.float32)
    t = np.linspace(-0.5, 0.5, 8, dtype=np.float32)
    g = np.clip(0.5 + t[None, :] * np.cos(phi) + t[:, None] * np.sin(phi), 0, 1)[..., None]
    small = (255 * (ends[0] + g * (ends[1] - ends[0]))).astype(np.uint8)
    photo = Image.fromarray(small).resize((canvas, canvas), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(photo)
    for _ in range(rng.integers(2, 6)):  # clutter: irregular blobs and lines, no primitives
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        c = rng.uniform(0, canvas, 2)
        if rng.random() < 0.5:
            r = canvas * rng.uniform(0.03, 0.08) * rng.uniform(0.4, 1.0, 6)
            a = np.sort(rng.uniform(0, 2 * np.pi, 6))
            draw.polygon(_flat(c + np.stack([r * np.cos(a), r * np.sin(a)], 1)), fill=colour)
        else:
            end = c + rng.normal(0, 0.15 * canvas, 2)
            draw.line([tuple(c), tuple(end)], fill=colour, width=int(rng.integers(1, 4)))
    full = Image.new("L", (canvas, canvas), 0)
    hue = rng.uniform()
    for i, (prim, slots) in enumerate(pose["parts"]):
        mask = Image.new("L", (canvas, canvas), 0)
        mdraw = ImageDraw.Draw(mask)
        for slot in slots:
            for j, contour in enumerate(_contours(prim, 48)):
                mdraw.polygon(_flat(_place(contour, slot, pose)), fill=0 if j else 255)
        box = mask.getbbox()
        if box is None:  # posed entirely off the canvas
            continue
        x0, y0, x1, y1 = box
        # Vivid, and a third of the hue circle away from the previous part so nesting shows.
        hsv = ((hue + i * rng.uniform(0.28, 0.4)) % 1, rng.uniform(0.55, 1), rng.uniform(0.55, 1))
        colour = 255 * np.array(colorsys.hsv_to_rgb(*hsv), np.float32)
        tex = _texture(rng, colour, xs[y0:y1, x0:x1], ys[y0:y1, x0:x1])
        cut = mask.crop(box)
        photo.paste(Image.fromarray(np.clip(tex, 0, 255).astype(np.uint8)), box, cut)
        full.paste(255, box, cut)
    return photo, full


def _wobbly_strokes(contour: np.ndarray, rng: np.random.Generator, canvas: int) -> list:
    """Cut a closed outline into 1-3 hand-drawn strokes with wobble, gaps and overshoot."""
    closed = np.concatenate([contour, contour[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    m = max(8, int(arc[-1] / (0.03 * canvas)))
    s = (rng.uniform() + np.arange(m) / m) * arc[-1] % arc[-1]  # start at a random point
    pts = np.stack([np.interp(s, arc, closed[:, 0]), np.interp(s, arc, closed[:, 1])], 1)
    # Low-frequency wobble: a few random offsets interpolated along the outline, smaller on small
    # shapes so that a satellite does not dissolve into a scribble.
    amp = min(0.012 * canvas, 0.08 * np.ptp(contour, axis=0).max() / 2)
    knots = rng.normal(0, amp, (6, 2))
    k = np.linspace(0, 5, m)
    pts = pts + np.stack([np.interp(k, np.arange(6), knots[:, d]) for d in range(2)], 1)
    pts = pts + rng.normal(0, 0.003 * canvas, pts.shape)
    pieces = rng.choice(3, p=[0.5, 0.3, 0.2]) + 1
    cuts = [0, *np.sort(rng.choice(np.arange(2, m - 1), pieces - 1, replace=False)), m]
    strokes = []
    for a, b in zip(cuts[:-1], cuts[1:], strict=True):
        end = max(a + 2, b + int(rng.integers(-1, 3)))  # a small gap or an overshoot
        strokes.append(pts[np.arange(a, end) % m])
    return strokes


def _render_sketch(pose: dict, rng: np.random.Generator, canvas: int) -> Image.Image:
    # The sketcher's hand: the pose is shared with the photo up to a small jitter.
    pose = dict(
        pose,
        angle=pose["angle"] + rng.uniform(-0.05, 0.05),
        scale=pose["scale"] * rng.uniform(0.96, 1.04),
        centre=pose["centre"] + rng.uniform(-0.02, 0.02, 2) * canvas,
    )
    sketch = Image.new("L", (canvas, canvas), 255)
    draw = ImageDraw.Draw(sketch)
    base = canvas / 128 * rng.uniform(1.8, 3.4)
    for prim, slots in pose["parts"]:
        n = int(rng.integers(12, 25)) if prim in _CURVED else 0  # abstraction: coarse curves
        drop = int(rng.integers(len(slots))) if len(slots) > 1 and rng.random() < 0.2 else -1
        for i, slot in enumerate(slots):
            if i == drop:  # a missing detail: one satellite left out
                continue
            for contour in _contours(prim, n):
                strokes = _wobbly_strokes(_place(contour, slot, pose), rng, canvas)
                # At most one dropped stroke, and never most of an outline, so the shape stays
                # readable.
                lengths = [len(stroke) for stroke in strokes]
                gone = int(rng.integers(len(strokes))) if rng.random() < 0.25 else -1
                for j, stroke in enumerate(strokes):
                    if j == gone and 2 * lengths[j] < sum(lengths):
                        continue
                    tone = int(rng.integers(0, 70))
                    width = max(1, round(base * rng.uniform(0.7, 1.3)))
                    draw.line(_flat(stroke), fill=tone, width=width, joint="curve")
                    if rng.random() < 0.3:  # an over-drawn stroke, a little off the first one
                        again = stroke + rng.normal(0, 0.006 * canvas, stroke.shape)
                        draw.line(_flat(again), fill=tone, width=max(1, width - 1))
    return sketch


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
        photo = np.asarray(_render_photo(pose, rng, canvas)[0].reduce(2), np.float32)
        ox, oy = rng.integers(0, size, 2)  # sensor noise at the output resolution
        photo += _noise_bank(size)[oy : oy + size, ox : ox + size]
        return np.clip(photo, 0, 255).astype(np.uint8)
    return np.asarray(_render_sketch(pose, rng, canvas).reduce(2).convert("RGB"))


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
    _, mask = _render_photo(pose, _rng(shape_class, instance, seed, 0), 2 * size)
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
