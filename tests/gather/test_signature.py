"""Near-duplicate detection: copies (resized, re-compressed, mirrored) are found; different
images, including toy-world scenes whose grey-level hashes agree, are not."""

import io
import itertools

import numpy as np
from PIL import Image, ImageOps

from edlib.gather.signature import (
    DuplicateIndex,
    file_signature,
    from_json,
    signature,
    to_json,
)
from edlib.world import sample_scene
from edlib.world.render import Scene, render


def _jpeg(image: Image.Image, size: int, quality: int) -> Image.Image:
    buf = io.BytesIO()
    image.resize((size, size), Image.LANCZOS).save(buf, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buf.getvalue())).convert("RGB")


def _smooth_field(rng: np.random.Generator, n: int = 192) -> Image.Image:
    """A photo-like image: colour noise smoothed at several scales."""
    from scipy.ndimage import gaussian_filter

    field = sum(gaussian_filter(rng.normal(size=(n, n, 3)), (s, s, 0)) * s for s in (2, 8, 24))
    field = (field - field.min()) / (field.max() - field.min()) * 255
    return Image.fromarray(field.astype(np.uint8))


def _scenes(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    seen = {}
    while len(seen) < n:
        s = sample_scene(rng)
        seen[s] = render(s, 128)
    return list(seen.values())


def test_resized_and_recompressed_copies_are_found():
    rng = np.random.default_rng(1)
    originals = _scenes(20) + [_smooth_field(rng) for _ in range(10)]
    for original in originals:
        index = DuplicateIndex()
        index.add(signature(original), "original")
        for size, quality in ((150, 60), (96, 90), (64, 75), (64, 50), (48, 70), (256, 40)):
            assert index.find(signature(_jpeg(original, size, quality))) == "original", (size, quality)


def test_a_mirror_image_is_a_different_image():
    """A scene "on the left" mirrored is the scene "on the right", with another caption."""
    left = render(Scene(shape="heart", colour="red", size="medium", position="left", background="white"), 96)
    index = DuplicateIndex()
    index.add(signature(left), "left")
    assert index.find(signature(ImageOps.mirror(left))) is None


def test_different_images_are_not_duplicates():
    rng = np.random.default_rng(2)
    images = _scenes(300) + [_smooth_field(rng) for _ in range(30)]
    sigs = [signature(im) for im in images]
    # Many toy scenes share their grey-level structure (same shape and place, other colours):
    # their dHashes are equal, and only the colour check tells them apart.
    same_hash = sum(a.dhash == b.dhash for a, b in itertools.combinations(sigs, 2))
    assert same_hash > 0
    for i, sig in enumerate(sigs):
        index = DuplicateIndex()
        for j, other in enumerate(sigs):
            if j != i:
                index.add(other, str(j))
        assert index.find(sig) is None, f"image {i} taken for a copy of {index.find(sig)}"


def test_signatures_round_trip_as_text_and_files_agree_with_images(tmp_path):
    image = _scenes(1, seed=9)[0]
    path = tmp_path / "a.jpg"
    image.save(path, quality=92)
    from_file = file_signature(path)
    assert from_json(to_json(from_file)) == from_file
    index = DuplicateIndex()
    index.add(signature(image), "in memory")
    assert index.find(from_file) == "in memory"
