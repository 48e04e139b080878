"""Draw toy-world scenes: one coloured shape on a plain background.

The world is deliberately small so that a tiny text-to-image model can learn it on a CPU
and a few lines of numpy can check what it drew: a handful of shapes that stay
distinguishable at 32x32, colours far apart in RGB, three sizes and five positions.

Shapes are drawn in a unit box ([0, 1] x [0, 1], y pointing down) that is scaled to the
shape's pixel box. Edges are anti-aliased by drawing the mask at `SUPERSAMPLE` times the
resolution and box-filtering it down, so a render is a pure background colour, a pure
shape colour, and a one-pixel blend between them: exactly what the check expects.

`NOVEL_SHAPES` are drawn the same way but are not part of the base world: the pretrained
model never sees them, so the demo can teach one under its made-up name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image, ImageDraw

SUPERSAMPLE = 4

# Far apart in RGB (the closest pair, orange/yellow, is ~87 apart), names nobody argues about.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 20),
    "yellow": (245, 225, 40),
    "green": (30, 170, 60),
    "blue": (30, 70, 230),
    "purple": (140, 50, 190),
    "white": (245, 245, 245),
    "black": (20, 20, 20),
}
COLOURS: tuple[str, ...] = tuple(PALETTE)

# Side of the shape's box as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.36, "medium": 0.52, "large": 0.7}

# Gap between a box pushed to an edge and the image border, as a fraction of the side.
MARGIN = 0.05
POSITIONS: tuple[str, ...] = ("center", "left", "right", "top", "bottom")

Point = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
ShapeDrawer = Callable[[ImageDraw.ImageDraw, Box], None]


@dataclass(frozen=True)
class Scene:
    """One shape on a background. Fields are names from the world's vocabularies.

    Every field except `shape` may be None: `parse_caption` returns what a prompt asked
    for, and a prompt need not say everything. `render` needs a complete scene.
    """

    shape: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        if self.colour is not None and self.colour == self.background:
            raise ValueError(
                f"a {self.colour} shape on a {self.background} background would be invisible"
            )

    def missing(self) -> list[str]:
        """Names of the fields a render needs but this scene leaves open."""
        return [f.name for f in fields(self) if getattr(self, f.name) is None]


def _polygon(points: Sequence[Point]) -> ShapeDrawer:
    """A drawer for a polygon given in unit-box coordinates."""

    def draw(canvas: ImageDraw.ImageDraw, box: Box) -> None:
        x0, y0, x1, y1 = box
        w, h = x1 - x0, y1 - y0
        canvas.polygon([(x0 + px * w, y0 + py * h) for px, py in points], fill=255)

    return draw


def _star_points(tips: int = 5, inner: float = 0.4) -> list[Point]:
    """A star with `tips` points up, inner radius as a fraction of the outer one.

    The star is scaled to fill its box, so its size matches the other shapes' sizes.
    """
    angles = -np.pi / 2 + np.arange(2 * tips) * np.pi / tips
    radii = np.where(np.arange(2 * tips) % 2 == 0, 1.0, inner)
    xs, ys = radii * np.cos(angles), radii * np.sin(angles)
    xs = (xs - xs.min()) / (xs.max() - xs.min())
    ys = (ys - ys.min()) / (ys.max() - ys.min())
    return list(zip(xs.tolist(), ys.tolist()))


def _circle(canvas: ImageDraw.ImageDraw, box: Box) -> None:
    canvas.ellipse(box, fill=255)


def _square(canvas: ImageDraw.ImageDraw, box: Box) -> None:
    canvas.rectangle(box, fill=255)


def _heart(canvas: ImageDraw.ImageDraw, box: Box) -> None:
    """Two round lobes on top of a point: a union of two circles and a triangle."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    r = 0.26
    for cx in (0.26, 0.74):
        canvas.ellipse((x0 + (cx - r) * w, y0, x0 + (cx + r) * w, y0 + 2 * r * h), fill=255)
    _polygon([(0.015, 0.36), (0.985, 0.36), (0.5, 1.0)])(canvas, box)


def _crescent(canvas: ImageDraw.ImageDraw, box: Box) -> None:
    """A disc with a disc bitten out of its right side (opening to the right)."""
    x0, y0, x1, y1 = box
    w = x1 - x0
    canvas.ellipse(box, fill=255)
    canvas.ellipse((x0 + 0.38 * w, y0 - 0.05 * w, x1 + 0.38 * w, y1 - 0.05 * w), fill=0)


_CROSS_ARM = 1 / 3  # width of each arm of the plus, as a fraction of the box

BASE_SHAPES: dict[str, ShapeDrawer] = {
    "circle": _circle,
    "square": _square,
    "triangle": _polygon([(0.5, 0.0), (1.0, 1.0), (0.0, 1.0)]),
    "star": _polygon(_star_points()),
    "diamond": _polygon([(0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.0, 0.5)]),
    "cross": _polygon(  # a plus sign
        [
            (_CROSS_ARM, 0.0), (1 - _CROSS_ARM, 0.0), (1 - _CROSS_ARM, _CROSS_ARM),
            (1.0, _CROSS_ARM), (1.0, 1 - _CROSS_ARM), (1 - _CROSS_ARM, 1 - _CROSS_ARM),
            (1 - _CROSS_ARM, 1.0), (_CROSS_ARM, 1.0), (_CROSS_ARM, 1 - _CROSS_ARM),
            (0.0, 1 - _CROSS_ARM), (0.0, _CROSS_ARM), (_CROSS_ARM, _CROSS_ARM),
        ]
    ),
    "heart": _heart,
}

# Made-up names for shapes the base world never draws: concepts for the demo to teach.
NOVEL_SHAPES: dict[str, ShapeDrawer] = {
    "zorblat": _crescent,
    "blicket": _polygon(  # an arrow pointing right
        [(0.0, 0.34), (0.5, 0.34), (0.5, 0.0), (1.0, 0.5), (0.5, 1.0), (0.5, 0.66), (0.0, 0.66)]
    ),
}

SHAPE_DRAWERS: dict[str, ShapeDrawer] = {**BASE_SHAPES, **NOVEL_SHAPES}
SHAPES: tuple[str, ...] = tuple(BASE_SHAPES)
ALL_SHAPES: tuple[str, ...] = tuple(SHAPE_DRAWERS)


def shape_box(size: str, position: str, image_size: int) -> Box:
    """The pixel box a shape of `size` at `position` occupies in an `image_size` image."""
    side = SIZES[size] * image_size
    lo, hi = MARGIN * image_size, (1 - MARGIN) * image_size - side
    mid = (image_size - side) / 2
    x0, y0 = {
        "center": (mid, mid),
        "left": (lo, mid),
        "right": (hi, mid),
        "top": (mid, lo),
        "bottom": (mid, hi),
    }[position]
    return (x0, y0, x0 + side, y0 + side)


def shape_mask(shape: str, box: Box, image_size: int | tuple[int, int]) -> Image.Image:
    """An anti-aliased "L" mask (255 inside) of `shape` drawn in pixel `box`.

    Also used by the check to draw candidate shapes at the box it measured.
    """
    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    if shape not in SHAPE_DRAWERS:
        raise ValueError(f"unknown shape {shape!r}; known shapes: {', '.join(ALL_SHAPES)}")
    big = Image.new("L", (width * SUPERSAMPLE, height * SUPERSAMPLE), 0)
    # Pillow's fills include the far edge (x1, y1); stopping one supersampled pixel short
    # makes a box of side n cover exactly n pixels.
    s = SUPERSAMPLE
    x0, y0, x1, y1 = box
    scaled = (x0 * s, y0 * s, x1 * s - 1, y1 * s - 1)
    SHAPE_DRAWERS[shape](ImageDraw.Draw(big), scaled)
    return big.reduce(SUPERSAMPLE)


def render(scene: Scene, size: int = 64) -> Image.Image:
    """Draw a complete `scene` as an RGB image of `size` x `size`. Deterministic."""
    missing = scene.missing()
    if missing:
        raise ValueError(f"cannot render {scene}: it leaves {', '.join(missing)} open")
    for value, known, what in [
        (scene.colour, PALETTE, "colour"),
        (scene.background, PALETTE, "background colour"),
        (scene.size, SIZES, "size"),
        (scene.position, POSITIONS, "position"),
    ]:
        if value not in known:
            raise ValueError(f"unknown {what} {value!r}; known: {', '.join(known)}")
    mask = shape_mask(scene.shape, shape_box(scene.size, scene.position, size), size)
    background = Image.new("RGB", (size, size), PALETTE[scene.background])
    foreground = Image.new("RGB", (size, size), PALETTE[scene.colour])
    return Image.composite(foreground, background, mask)
