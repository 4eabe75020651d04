"""Drawing internals of the procedural SBIR set: contours, poses, textures, photos and sketches.

`jsbir.data.synthetic` is the public face (class catalogue, seeds, ``render``). This module knows
nothing of classes or seeds: it takes a shape program (primitives in role order and an
arrangement) and draws it on a supersampled canvas with PIL.ImageDraw. Every random choice comes
from the numpy Generator passed in, so the caller fixes determinism. It imports nothing from
`jsbir.data.synthetic`, which depends on it.
"""

from __future__ import annotations

import colorsys
import functools

import numpy as np
from PIL import Image, ImageDraw

# Per arrangement: the role slots in the unit frame (centre x, centre y, scale). Its key order is
# the order of jsbir.data.synthetic.ARRANGEMENTS.
SLOTS: dict[str, tuple[tuple[float, float, float], ...]] = {
    "beside": ((-0.5, 0.0, 0.42), (0.5, 0.0, 0.42)),
    "above": ((0.0, -0.5, 0.42), (0.0, 0.5, 0.42)),
    "diagonal": ((-0.48, 0.48, 0.4), (0.48, -0.48, 0.4)),
    "inside": ((0.0, 0.0, 0.4), (0.0, 0.0, 0.9)),
    "around": ((0.8, 0.0, 0.26), (0.0, 0.0, 0.42)),
    "row": ((-0.68, 0.0, 0.3), (0.0, 0.0, 0.3), (0.68, 0.0, 0.3)),
}
# Arrangements whose primitives' order is drawn per instance (the roles are interchangeable).
SYMMETRIC = frozenset({"beside", "above", "diagonal", "row"})
_CURVED = {"circle", "ring", "crescent", "heart", "semicircle"}
# Inner scale (relative to the outer one) that keeps the inner shape clear of the outer's border.
_INNER_SCALE = {"ring": 0.42, "triangle": 0.36, "heart": 0.38}
_INNER_OFFSET_Y = {"triangle": 0.08, "heart": -0.08}


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


def make_pose(
    primitives: tuple[str, ...],
    arrangement: str,
    rng: np.random.Generator,
    size: int,
) -> dict:
    """The pose of one instance: parts (primitive, slots) and the global transform.

    Parts are listed in painting order; each slot is (x, y, scale, rotation) in the unit frame.
    It depends only on the program and on rng, so both modalities of an instance share it when
    they are given the same pose stream.

    Args:
        primitives: the primitives in role order (see ShapeClass in jsbir.data.synthetic).
        arrangement: one of SLOTS.
        rng: the instance's pose stream; consumed.
        size: canvas height and width in pixels.
    """
    layout = SLOTS[arrangement]
    prims = list(primitives)
    if arrangement in SYMMETRIC:
        prims = [prims[i] for i in rng.permutation(len(prims))]
    parts = []
    for prim, (x, y, scale) in zip(prims, layout, strict=True):
        jitter = rng.uniform(-0.05, 0.05, 2)
        scale, turn = scale * rng.uniform(0.9, 1.1), rng.uniform(-0.2, 0.2)
        slots = [(x + jitter[0], y + jitter[1], scale, turn)]
        if arrangement == "around" and x != 0.0:  # three satellites on a circle
            angles = rng.uniform(0, 2 * np.pi) + np.arange(3) * 2 * np.pi / 3
            slots = [(x * np.cos(a), x * np.sin(a), scale, turn) for a in angles]
        parts.append((prim, slots))
    if arrangement == "inside":  # put the inner shape inside the outer one's body
        outer = primitives[1]
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


@functools.lru_cache(maxsize=8)
def _grid(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:canvas, 0:canvas].astype(np.float32) / canvas
    return xs, ys


@functools.lru_cache(maxsize=8)
def noise_bank(size: int) -> np.ndarray:
    """A fixed bank of sensor noise (2 * size square, 3 channels) to take size x size crops from."""
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


def render_photo(
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


def render_sketch(pose: dict, rng: np.random.Generator, canvas: int) -> Image.Image:
    """Draw the sketch on the 2x canvas: black wobbly outlines on white ("L" mode)."""
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
