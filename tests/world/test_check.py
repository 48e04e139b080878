"""The automatic check on rendered world images: clean, noisy, blurred, 64x64 and 32x32.

Measured (1000 random scenes per condition, all shapes including the novel ones), colour
/ shape accuracy: clean renders 100% / 100% at 64 and 32; gaussian noise sigma 20 plus
blur sigma 1.5 px (at 64, scaled with the image) 100% / 100% at 64 and 100% / 98.7% at
32; noise 35 plus blur 2 px 99.4% / 98.1% at 64 and 99.5% / 94.0% at 32. The tests
assert a margin below these.
"""

import itertools

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from edlib.world import (
    ALL_SHAPES,
    COLOURS,
    PALETTE,
    POSITIONS,
    SHAPES,
    SIZES,
    Scene,
    caption,
    classify,
    fidelity,
    render,
    sample_scene,
    score,
)


def degrade(image: Image.Image, rng: np.random.Generator, *, noise: float, blur: float):
    """Blur (sigma in pixels at 64x64, scaled with the image) and add gaussian noise."""
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur * image.width / 64))
    noise = rng.normal(0, noise, (image.height, image.width, 3))
    pixels = np.asarray(image, dtype=np.float64) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def grid_scenes() -> list[Scene]:
    """Every shape at every size and position, with colours and backgrounds rotating."""
    scenes = []
    for i, (shape, size, position) in enumerate(itertools.product(ALL_SHAPES, SIZES, POSITIONS)):
        colour = COLOURS[i % len(COLOURS)]
        background = COLOURS[(i * 3 + 1) % len(COLOURS)]
        if background == colour:
            background = COLOURS[(i * 3 + 2) % len(COLOURS)]
        scenes.append(Scene(shape, colour, size, position, background))
    return scenes


def accuracy(scenes, images):
    seen = [classify(image) for image in images]
    colour = np.mean([s.colour == c.colour for s, c in zip(scenes, seen)])
    shape = np.mean([s.shape == c.shape for s, c in zip(scenes, seen)])
    background = np.mean([s.background == c.background for s, c in zip(scenes, seen)])
    return colour, shape, background


@pytest.mark.parametrize("size", [64, 32])
def test_clean_renders_are_classified_exactly(size):
    scenes = grid_scenes()
    for scene in scenes:
        seen = classify(render(scene, size))
        got = (seen.colour, seen.shape, seen.background)
        assert got == (scene.colour, scene.shape, scene.background), (
            f"{caption(scene)} at {size}x{size}: saw {seen}"
        )
        assert seen.confidence > 0.8


@pytest.mark.parametrize("size, shape_bar", [(64, 0.97), (32, 0.95)])
def test_noisy_blurred_renders_are_classified_reliably(size, shape_bar):
    rng = np.random.default_rng(size)
    scenes = [sample_scene(rng, shapes=ALL_SHAPES) for _ in range(80)]
    images = [degrade(render(s, size), rng, noise=20, blur=1.5) for s in scenes]
    colour, shape, background = accuracy(scenes, images)
    assert colour >= 0.98 and background == 1.0
    assert shape >= shape_bar, f"shape accuracy {shape:.3f} at {size}x{size}"


def test_heavily_degraded_renders_still_mostly_classified():
    rng = np.random.default_rng(5)
    scenes = [sample_scene(rng, shapes=ALL_SHAPES) for _ in range(80)]
    images = [degrade(render(s), rng, noise=35, blur=2.0) for s in scenes]
    colour, shape, background = accuracy(scenes, images)
    assert colour >= 0.97 and background == 1.0
    assert shape >= 0.92, f"shape accuracy {shape:.3f}"


def test_stray_specks_do_not_change_the_answer():
    scene = Scene("triangle", "orange", "medium", "right", "blue")
    image = render(scene)
    draw = ImageDraw.Draw(image)
    draw.ellipse((6, 6, 9, 9), fill=PALETTE["orange"])
    draw.rectangle((8, 50, 10, 52), fill=PALETTE["orange"])
    seen = classify(image)
    assert (seen.colour, seen.shape, seen.background) == ("orange", "triangle", "blue")


def test_a_blank_image_has_no_shape():
    rng = np.random.default_rng(6)
    blank = degrade(Image.new("RGB", (64, 64), PALETTE["green"]), rng, noise=8, blur=0)
    seen = classify(blank)
    assert seen.shape is None and seen.colour is None and seen.confidence == 0.0
    assert seen.background == "green"


def test_pure_noise_gets_a_low_confidence():
    rng = np.random.default_rng(9)
    for _ in range(10):
        noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
        assert classify(noise).confidence < 0.6  # clean renders score above 0.8


def test_candidates_can_be_restricted():
    image = render(Scene("zorblat", "white", "large", "center", "black"))
    assert classify(image).shape == "zorblat"
    restricted = classify(image, shapes=SHAPES)
    assert restricted.shape in SHAPES and set(restricted.shape_scores) == set(SHAPES)
    assert restricted.confidence < classify(image).confidence


def test_score_counts_what_each_prompt_asks():
    prompts = [
        "a red circle on a blue background",
        "a green square",
        "a large yellow star at the top on a black background",
        "a zorblat on a white background",
    ]
    drawn = [
        Scene("circle", "red", "medium", "center", "blue"),  # all right
        Scene("square", "purple", "small", "left", "white"),  # wrong colour
        Scene("heart", "yellow", "large", "top", "black"),  # wrong shape
        Scene("zorblat", "black", "large", "center", "white"),  # no colour asked
    ]
    result = score([render(s) for s in drawn], prompts)
    assert result == {"n": 4, "colour": 2 / 3, "shape": 3 / 4, "both": 2 / 4, "background": 1.0}


def test_score_of_correct_renders_is_perfect_and_of_swapped_ones_is_not():
    rng = np.random.default_rng(8)
    scenes = [sample_scene(rng) for _ in range(20)]
    prompts = [caption(s) for s in scenes]
    images = [render(s) for s in scenes]
    perfect = {"n": 20, "colour": 1.0, "shape": 1.0, "both": 1.0, "background": 1.0}
    assert score(images, prompts) == perfect
    shifted = score(images[1:] + images[:1], prompts)
    expected_shape = np.mean([a.shape == b.shape for a, b in zip(scenes, scenes[1:] + scenes[:1])])
    assert shifted["shape"] == pytest.approx(expected_shape)
    assert shifted["both"] < 0.5


def test_score_rejects_mismatched_or_empty_input():
    image = render(Scene("circle", "red", "small", "left", "blue"))
    with pytest.raises(ValueError, match="2 images for 1 prompts"):
        score([image, image], ["a red circle"])
    with pytest.raises(ValueError, match="at least one"):
        score([], [])
    with pytest.raises(ValueError, match="not a toy-world caption"):
        score([image], ["a photo of a cat"])


def test_fidelity_falls_when_shapes_go_soft_though_they_are_still_named():
    """The pass/fail shape rate forgives a soft drawing; fidelity does not (issue 19: a
    three-lobed triangle and a blob for a heart passed as right)."""
    rng = np.random.default_rng(0)
    scenes = [sample_scene(rng) for _ in range(48)]
    prompts = [caption(s) for s in scenes]
    sharp = [render(s) for s in scenes]
    soft = [image.filter(ImageFilter.GaussianBlur(2.0)) for image in sharp]
    assert fidelity(sharp, prompts) > 0.95 and score(soft, prompts)["shape"] == 1.0  # still named right...
    assert fidelity(soft, prompts) < fidelity(sharp, prompts) - 0.08  # ...but visibly softer, and measured so
    blank = classify(Image.new("RGB", (64, 64), (0, 0, 0)))
    assert blank.fidelity("circle") == 0.0
