"""The toy world's renderer: pure colours, true geometry, distinguishable shapes, speed."""

import itertools
import time

import numpy as np
import pytest

from edlib.world import (
    ALL_SHAPES,
    COLOURS,
    NOVEL_SHAPES,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    render,
)
from edlib.world.render import shape_box, shape_mask


def test_render_is_deterministic_rgb_of_the_asked_size():
    scene = Scene("star", "red", "medium", "left", "blue")
    for size in (32, 64, 96):
        a, b = render(scene, size), render(scene, size)
        assert a.mode == "RGB" and a.size == (size, size)
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("shape", ALL_SHAPES)
def test_every_pixel_is_the_background_the_shape_colour_or_a_blend_of_them(shape):
    scene = Scene(shape, "yellow", "large", "center", "purple")
    pixels = np.asarray(render(scene), dtype=np.float64).reshape(-1, 3)
    back, front = np.array(PALETTE["purple"]), np.array(PALETTE["yellow"])
    axis = front - back
    t = np.clip((pixels - back) @ axis / (axis @ axis), 0, 1)
    off_line = np.linalg.norm(pixels - (back + t[:, None] * axis), axis=1)
    assert off_line.max() < 2.0  # rounding only
    pure = (t < 0.01) | (t > 0.99)
    assert pure.mean() > 0.9  # anti-aliasing touches only the edge
    assert (t > 0.99).sum() > 100 and (t < 0.01).sum() > 100


def test_shape_areas_match_their_geometry():
    side = 40
    box = (12, 12, 12 + side, 12 + side)

    def area(shape):
        return np.asarray(shape_mask(shape, box, 64), dtype=np.float64).sum() / 255

    assert area("square") == pytest.approx(side * side, rel=0.01)
    assert area("circle") == pytest.approx(np.pi * (side / 2) ** 2, rel=0.01)
    assert area("triangle") == pytest.approx(side * side / 2, rel=0.02)
    assert area("diamond") == pytest.approx(side * side / 2, rel=0.02)
    assert area("cross") == pytest.approx(side * side * 5 / 9, rel=0.02)


def test_sizes_grow_and_positions_move_the_shape_where_they_say():
    def centroid_and_area(size, position):
        mask = np.asarray(shape_mask("circle", shape_box(size, position, 64), 64), dtype=np.float64)
        ys, xs = np.indices(mask.shape)
        return (xs * mask).sum() / mask.sum(), (ys * mask).sum() / mask.sum(), mask.sum()

    areas = [centroid_and_area(s, "center")[2] for s in ("small", "medium", "large")]
    assert areas[0] < areas[1] < areas[2]
    for size in SIZES:
        cx, cy, _ = centroid_and_area(size, "center")
        assert cx == pytest.approx(31.5, abs=0.2) and cy == pytest.approx(31.5, abs=0.2)
        assert centroid_and_area(size, "left")[0] < cx - 3
        assert centroid_and_area(size, "right")[0] > cx + 3
        assert centroid_and_area(size, "top")[1] < cy - 3
        assert centroid_and_area(size, "bottom")[1] > cy + 3
        for position in POSITIONS:  # never cut off by the image border
            x0, y0, x1, y1 = shape_box(size, position, 64)
            assert 0 < x0 and 0 < y0 and x1 < 64 and y1 < 64


@pytest.mark.parametrize("size", [32, 64])
def test_shapes_are_distinguishable_from_each_other(size):
    box = (size * 0.2, size * 0.2, size * 0.8, size * 0.8)
    masks = {s: np.asarray(shape_mask(s, box, size), dtype=np.float64) / 255 for s in ALL_SHAPES}
    for a, b in itertools.combinations(ALL_SHAPES, 2):
        iou = np.minimum(masks[a], masks[b]).sum() / np.maximum(masks[a], masks[b]).sum()
        assert iou < 0.85, f"{a} and {b} overlap {iou:.2f} at {size}x{size}"


def test_novel_shapes_are_outside_the_base_world():
    assert NOVEL_SHAPES and not set(NOVEL_SHAPES) & set(SHAPES)
    assert set(ALL_SHAPES) == set(SHAPES) | set(NOVEL_SHAPES)
    assert len(SHAPES) >= 6 and len(COLOURS) >= 6


def test_bad_scenes_are_clear_errors():
    with pytest.raises(ValueError, match="invisible"):
        Scene("circle", "red", "small", "left", "red")
    with pytest.raises(ValueError, match="size, position"):
        render(Scene("circle", "red", background="blue"))
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        render(Scene("hexagon", "red", "small", "left", "blue"))
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        render(Scene("circle", "teal", "small", "left", "blue"))


def test_renders_thousands_of_images_per_second():
    combinations = itertools.product(ALL_SHAPES, COLOURS, SIZES, POSITIONS)
    scenes = [
        Scene(shape, colour, size, position, "black" if colour != "black" else "white")
        for shape, colour, size, position in combinations
    ][:500]
    start = time.perf_counter()
    for scene in scenes:
        render(scene, 64)
    rate = len(scenes) / (time.perf_counter() - start)
    assert rate > 1000, f"{rate:.0f} images/s"  # about 19,000/s measured on the 2-core CI machine
