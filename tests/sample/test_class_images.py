"""DreamBooth-style class images from the tiny model: a data-root folder of PNGs with caption
files and settings, reproducible by seed, resumable, and read by the scanner like any folder."""

import pytest
from PIL import Image

from edlib.data.scan import scan
from edlib.sample import read_parameters
from edlib.sample.class_images import generate_class_images

FAST = dict(steps=2, sampler="Euler", size=32)


def test_class_images_form_a_preservation_folder(tiny_model, tmp_path):
    folder = tmp_path / "data" / "preservation"
    paths = generate_class_images(tiny_model, "a photo of a dog", 3, folder, multiplier=0.5, seed=10, **FAST)

    assert [p.name for p in paths] == ["class-00000.png", "class-00001.png", "class-00002.png"]
    for i, path in enumerate(paths):
        assert Image.open(path).size == (32, 32)
        assert path.with_suffix(".txt").read_text(encoding="utf-8") == "a photo of a dog"
        assert f"Seed: {10 + i}" in read_parameters(path)
    assert (folder / "multiply.txt").read_text(encoding="utf-8").strip() == "0.5"
    assert not list(folder.glob(".*"))  # no temporary files left

    result = scan(tmp_path / "data", use_cache=False)
    assert [item.caption.text() for item in result.items] == ["a photo of a dog"] * 3
    assert result.folder("preservation").settings.multiply == 0.5


def test_generation_resumes_and_keeps_existing_images(tiny_model, tmp_path):
    first = generate_class_images(tiny_model, "a cat", 2, tmp_path, **FAST)
    before = [p.read_bytes() for p in first]
    again = generate_class_images(tiny_model, "a cat", 4, tmp_path, **FAST)
    assert [p.read_bytes() for p in again[:2]] == before
    assert all(p.exists() for p in again)

    # the same seeds give the same images in a fresh folder
    fresh = generate_class_images(tiny_model, "a cat", 4, tmp_path / "fresh", **FAST)
    assert [Image.open(p).tobytes() for p in fresh] == [Image.open(p).tobytes() for p in again]


def test_a_different_multiplier_the_user_wrote_is_not_overwritten(tiny_model, tmp_path):
    (tmp_path / "multiply.txt").write_text("2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="multiply.txt already holds '2'"):
        generate_class_images(tiny_model, "a cat", 1, tmp_path, multiplier=0.5, **FAST)
    assert (tmp_path / "multiply.txt").read_text(encoding="utf-8") == "2\n"
    with pytest.raises(ValueError, match="at least 1"):
        generate_class_images(tiny_model, "a cat", 0, tmp_path, **FAST)
