"""The automatic check: what colour and shape did a model draw?

No learning, just a few robust measurements, so the check is easy to trust and works on
the blurry, noisy images a tiny diffusion model makes:

1. Blur slightly, so pixel noise averages out.
2. Background = median colour of the border ring, named by the nearest palette colour.
3. Coverage: each pixel projected onto the axis from the background colour to the
   colour of the pixels farthest from it (0 = background, 1 = shape colour). The shape
   is the connected blob with coverage > 0.5 around the most covered pixel, so specks
   elsewhere do not count. Its colour is the palette colour that, mixed with the
   background, best explains the blob's core (blur mixes small shapes with it).
4. Shape: blur moves neither mass nor centroid, so the total and centroid of the
   coverage give the area and place the shape had. Each candidate shape is drawn by the
   renderer with that area and centroid, blurred a few ways (the image may be blurrier
   than the check's own blur), and compared with the coverage by soft intersection over
   union. The best candidate wins; its overlap is the confidence.
5. Fidelity: the same overlap with the asked shape's template at the check's own blur
   only. Step 4 forgives a soft drawing (a blob still matches a blurred heart best), as
   it must to name the shape; fidelity does not, so a three-lobed triangle or a blob for
   a heart scores low even when named right. Renders score about 0.98, renders blurred
   by 2 pixels about 0.86 (still named right).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from PIL import Image, ImageFilter

from edlib.world.grammar import parse_caption
from edlib.world.render import ALL_SHAPES, PALETTE, shape_mask

# Below this distance (RGB units) between the shape colour and the background, the image
# is taken to be blank: nothing was drawn that the check could name.
MIN_CONTRAST = 40.0

# Extra blurs (sigma in pixels at 64x64) a generated image may have beyond the check's own.
EXTRA_BLURS = (0.75, 1.5, 2.25, 3.0)

_NAMES = list(PALETTE)
_RGB = np.array([PALETTE[n] for n in _NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Classification:
    """What the check saw. `shape` and `colour` are None when the image looks blank.

    `confidence` is the overlap (soft IoU, 0..1) of what was drawn with the best
    template; `shape_scores` holds the overlap for every candidate shape.
    """

    colour: str | None
    background: str
    shape: str | None
    confidence: float
    shape_scores: dict[str, float] = field(default_factory=dict)
    sharp_scores: dict[str, float] = field(default_factory=dict)  # overlap at the check's own blur

    def fidelity(self, shape: str | None) -> float:
        """How exactly `shape` was drawn: the overlap with its sharp template (0 if blank)."""
        return self.sharp_scores.get(shape, 0.0) if shape else 0.0


def nearest_colour(rgb: np.ndarray) -> str:
    """The palette name nearest to an RGB triple."""
    distances = np.linalg.norm(_RGB - np.asarray(rgb, dtype=np.float32), axis=1)
    return _NAMES[int(np.argmin(distances))]


def shape_colour(rgb: np.ndarray, background: str) -> str:
    """The palette colour that, mixed with the background, best explains `rgb`.

    The inside of a small blurry shape is never its pure colour but a mix with the
    background (dark yellow on black is closer to orange than to yellow); each
    candidate may be mixed down to half strength before its distance is taken. The
    background's own colour is never a candidate: the world never draws that.
    """
    back = np.array(PALETTE[background], dtype=np.float32)
    seen = np.asarray(rgb, dtype=np.float32) - back
    best, best_distance = None, np.inf
    for name, colour in zip(_NAMES, _RGB):
        if name == background:
            continue
        direction = colour - back
        strength = np.clip(seen @ direction / (direction @ direction), 0.5, 1.0)
        distance = float(np.linalg.norm(seen - strength * direction))
        if distance < best_distance:
            best, best_distance = name, distance
    return best


@cache
def _unit_moments(shape: str) -> tuple[float, float, float]:
    """Area (fraction of its unit box) and centroid (in the unit box) of a shape."""
    side = 128
    mask = np.asarray(shape_mask(shape, (0, 0, side, side), side), dtype=np.float64) / 255
    ys, xs = np.indices(mask.shape) + 0.5
    area = mask.sum()
    return area / side**2, (xs * mask).sum() / area / side, (ys * mask).sum() / area / side


def _template(
    shape: str, area: float, centre: tuple[float, float], size: tuple[int, int]
) -> Image.Image:
    """An "L" mask of `shape` drawn with the given area (pixels) and centroid."""
    unit_area, cx, cy = _unit_moments(shape)
    side = (area / unit_area) ** 0.5  # every shape of the world is drawn in a square box
    x0, y0 = centre[0] - cx * side, centre[1] - cy * side
    return shape_mask(shape, (x0, y0, x0 + side, y0 + side), size)


def _blurred(mask: Image.Image, sigma: float) -> np.ndarray:
    """Coverage (0..1) of an "L" mask after a gaussian blur of `sigma` pixels."""
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(sigma)), dtype=np.float32) / 255


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two soft masks (1 when equal, 0 when disjoint)."""
    return float(np.minimum(a, b).sum() / max(np.maximum(a, b).sum(), 1e-6))


def _border_pixels(pixels: np.ndarray) -> np.ndarray:
    width = max(1, min(pixels.shape[:2]) // 32)
    ring = [pixels[:width], pixels[-width:], pixels[:, :width], pixels[:, -width:]]
    return np.concatenate([r.reshape(-1, 3) for r in ring])


def _main_blob(mask: np.ndarray, coverage: np.ndarray) -> np.ndarray:
    """The connected part of `mask` around its most covered pixel.

    Generated images have stray specks; the shape is the blob the model drew hardest.
    Grown from that pixel one step (4-neighbours) at a time until it stops growing.
    """
    blob = np.zeros_like(mask)
    blob[np.unravel_index(np.argmax(np.where(mask, coverage, -np.inf)), mask.shape)] = True
    while True:
        grown = blob.copy()
        grown[1:] |= blob[:-1]
        grown[:-1] |= blob[1:]
        grown[:, 1:] |= blob[:, :-1]
        grown[:, :-1] |= blob[:, 1:]
        grown &= mask
        if (grown == blob).all():
            return blob
        blob = grown


def _near(blob: np.ndarray, coverage: np.ndarray, pad: int) -> np.ndarray:
    """Coverage clipped to 0..1 in the blob's box grown by `pad`, zero elsewhere, so
    noise and specks across the rest of the image do not count."""
    rows, cols = np.flatnonzero(blob.any(axis=1)), np.flatnonzero(blob.any(axis=0))
    window = np.zeros_like(blob)
    top, left = max(rows[0] - pad, 0), max(cols[0] - pad, 0)
    window[top : rows[-1] + pad + 1, left : cols[-1] + pad + 1] = True
    return np.where(window, np.clip(coverage, 0.0, 1.0), 0.0).astype(np.float32)


def classify(image: Image.Image, *, shapes: Iterable[str] = ALL_SHAPES) -> Classification:
    """Name the background colour, the shape's colour and the shape (among `shapes`)."""
    rgb = image.convert("RGB")
    scale = max(rgb.size) / 64
    # Sigma of about 0.8 pixel at 64x64 (never below 0.6): enough to average out
    # sampling noise, small enough that a small star keeps its points.
    radius = max(0.8 * scale, 0.6)
    pixels = np.asarray(rgb.filter(ImageFilter.GaussianBlur(radius)), dtype=np.float32)

    background_rgb = np.median(_border_pixels(pixels), axis=0)
    background = nearest_colour(background_rgb)
    offset = pixels - background_rgb
    distance = np.linalg.norm(offset, axis=-1)
    far = np.percentile(distance, 99)
    if far < MIN_CONTRAST:
        return Classification(colour=None, background=background, shape=None, confidence=0.0)

    shape_rgb = np.median(pixels[distance > 0.5 * far], axis=0)
    axis = shape_rgb - background_rgb
    coverage = offset @ axis / float(axis @ axis)
    if coverage.max() <= 0.5:  # no pixel is even half the shape colour: noise, not a shape
        return Classification(colour=None, background=background, shape=None, confidence=0.0)
    blob = _main_blob(coverage > 0.5, coverage)
    core = blob & (coverage > 0.75)
    colour = shape_colour(np.median(pixels[core if core.any() else blob], axis=0), background)

    # Area and centroid are blur-proof (step 4 above); corners and points are not, so
    # each template is compared at a few blurs and keeps its best overlap.
    seen = _near(blob, coverage, pad=int(np.ceil(3 * radius)) + 1)
    area = float(seen.sum())
    ys, xs = np.indices(seen.shape) + 0.5
    centre = (float((xs * seen).sum()) / area, float((ys * seen).sum()) / area)
    blurs = [float(np.hypot(radius, k * scale)) for k in (0.0, *EXTRA_BLURS)]
    scores, sharp = {}, {}
    for shape in shapes:
        template = _template(shape, area, centre, rgb.size)
        overlaps = [_overlap(_blurred(template, b), seen) for b in blurs]
        scores[shape], sharp[shape] = max(overlaps), overlaps[0]
    best = max(scores, key=scores.__getitem__)
    return Classification(
        colour=colour,
        background=background,
        shape=best,
        confidence=scores[best],
        shape_scores=scores,
        sharp_scores=sharp,
    )


def score(
    images: Sequence[Image.Image], prompts: Sequence[str], *, shapes: Iterable[str] = ALL_SHAPES
) -> dict[str, float | int | None]:
    """Accuracy of generated images against the prompts that made them.

    Each attribute is scored over the prompts that ask for it: "colour" over prompts
    naming a colour, "background" over prompts naming one, "shape" over all. "both" is
    the fraction of images with the asked shape and (where asked) the asked colour: the
    number a model card reports. An accuracy is None when no prompt asks for it. See
    `fidelity` for how exactly the shapes were drawn.
    """
    if len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts")
    if not prompts:
        raise ValueError("score needs at least one (image, prompt) pair")
    shapes = tuple(shapes)
    asked = [parse_caption(p) for p in prompts]
    seen = [classify(image, shapes=shapes) for image in images]

    def accuracy(hits: list[bool]) -> float | None:
        return sum(hits) / len(hits) if hits else None

    pairs = list(zip(asked, seen))
    shape_ok = [s.shape == a.shape for a, s in pairs]
    colour_ok = [s.colour == a.colour or a.colour is None for a, s in pairs]
    return {
        "n": len(prompts),
        "colour": accuracy([s.colour == a.colour for a, s in pairs if a.colour]),
        "shape": accuracy(shape_ok),
        "both": accuracy([s and c for s, c in zip(shape_ok, colour_ok)]),
        "background": accuracy(
            [s.background == a.background for a, s in pairs if a.background]
        ),
    }


def fidelity(images: Sequence[Image.Image], prompts: Sequence[str], *, shapes: Iterable[str] = ALL_SHAPES) -> float:
    """Mean overlap (0..1) of each image with its asked shape drawn sharp (step 5 of the
    module docstring; a blank image counts 0). It falls when shapes go soft, which the
    pass/fail shape rate of `score` forgives: renders score about 0.98."""
    if len(images) != len(prompts) or not prompts:
        raise ValueError(f"fidelity needs as many images as prompts, at least one; got {len(images)} and {len(prompts)}")
    shapes = tuple(shapes)
    asked = [parse_caption(p).shape for p in prompts]
    return sum(classify(image, shapes=shapes).fidelity(shape) for image, shape in zip(images, asked)) / len(prompts)
