"""Writing toy-world data roots and splitting the caption space."""

from pathlib import Path

import pytest
from PIL import Image

from edlib.world import (
    COLOURS,
    SHAPES,
    caption_split,
    classify,
    held_out_captions,
    parse_caption,
    write_data_root,
)

DEMO_SPEC = {
    "new_concept": {"count": 12, "shapes": ["zorblat"], "multiply": None},
    "other": {"count": 3, "shapes": ["blicket"], "colours": ["red", "blue"]},
    "world/preservation": {"count": 20, "multiply": "0.1", "loss_scale": 0.5},
}


def files_of(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_writes_images_with_matching_captions_and_folder_files(tmp_path):
    written = write_data_root(tmp_path, DEMO_SPEC, seed=0)
    assert written == {"new_concept": 12, "other": 3, "world/preservation": 20}
    for folder, count in written.items():
        images = sorted((tmp_path / folder).glob("*.png"))
        assert len(images) == count
        for image_path in images:
            image = Image.open(image_path)
            assert image.mode == "RGB" and image.size == (64, 64)
            scene = parse_caption(image_path.with_suffix(".txt").read_text(encoding="utf-8"))
            assert not scene.missing()  # full captions
            seen = classify(image)  # the caption describes the image
            got = (seen.shape, seen.colour, seen.background)
            assert got == (scene.shape, scene.colour, scene.background)
            if folder == "new_concept":
                assert scene.shape == "zorblat"
            if folder == "other":
                assert scene.shape == "blicket" and scene.colour in {"red", "blue"}
    assert (tmp_path / "world/preservation/multiply.txt").read_text() == "0.1\n"
    assert (tmp_path / "world/preservation/loss_scale.txt").read_text() == "0.5\n"
    assert not (tmp_path / "new_concept/multiply.txt").exists()
    assert not list((tmp_path / "world").glob("*.png"))  # nothing in the parent folder


def test_image_size_is_configurable(tmp_path):
    write_data_root(tmp_path, {"a": {"count": 2}}, seed=0, size=32)
    assert Image.open(tmp_path / "a/00000.png").size == (32, 32)


def test_same_seed_same_files_and_folders_are_independent(tmp_path):
    write_data_root(tmp_path / "one", DEMO_SPEC, seed=3)
    write_data_root(tmp_path / "two", DEMO_SPEC, seed=3)
    write_data_root(tmp_path / "other_seed", DEMO_SPEC, seed=4)
    write_data_root(tmp_path / "fewer", {"other": DEMO_SPEC["other"]}, seed=3)
    one = files_of(tmp_path / "one")
    assert one == files_of(tmp_path / "two")
    assert one != files_of(tmp_path / "other_seed")
    # A folder's images do not depend on which other folders are in the spec.
    assert {k: v for k, v in one.items() if k.startswith("other/")} == files_of(tmp_path / "fewer")


def test_held_out_pairs_can_be_excluded(tmp_path):
    split = caption_split(seed=0)
    write_data_root(tmp_path, {"train": {"count": 150, "exclude": sorted(split.held_out)}}, seed=1)
    pairs = set()
    for text in (tmp_path / "train").glob("*.txt"):
        scene = parse_caption(text.read_text(encoding="utf-8"))
        pairs.add((scene.colour, scene.shape))
    assert pairs and not pairs & split.held_out


def test_never_writes_into_a_folder_that_holds_files(tmp_path):
    user_file = tmp_path / "mine" / "photo.png"
    user_file.parent.mkdir()
    user_file.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="mine"):
        write_data_root(tmp_path, {"fresh": {"count": 2}, "mine": {"count": 2}}, seed=0)
    assert user_file.read_bytes() == b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # checked before writing anything


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"count": 2, "colour": ["red"]}, "unknown spec keys \\['colour'\\]"),
        ({"count": -1}, "count must be a whole number"),
        ({}, "count must be a whole number"),
        ({"count": 2, "multiply": "abc"}, "multiply 'abc' is not a number"),
        ({"count": 2, "multiply": 0}, "multiply must be > 0"),
        ({"count": 2, "loss_scale": "x"}, "loss_scale 'x' is not a number"),
        ({"count": 2, "shapes": ["hexagon"]}, "shapes must be a non-empty choice"),
        ({"count": 2, "colours": ["red"], "backgrounds": ["red"]}, "no \\(colour, shape\\) pair"),
    ],
)
def test_bad_specs_are_errors_that_name_the_folder(tmp_path, settings, message):
    with pytest.raises(ValueError, match=message) as error:
        write_data_root(tmp_path, {"good": {"count": 1}, "sub/folder": settings}, seed=0)
    assert "'sub/folder'" in str(error.value)
    assert not any(tmp_path.iterdir())


def test_caption_split_holds_out_pairs_whose_parts_are_still_trained():
    split = caption_split(seed=0, fraction=0.2)
    everything = {(c, s) for c in COLOURS for s in SHAPES}
    assert split.train | split.held_out == everything and not split.train & split.held_out
    assert len(split.held_out) == round(0.2 * len(everything))
    for colour in COLOURS:
        assert sum(c == colour for c, _ in split.train) >= 2
    for shape in SHAPES:
        assert sum(s == shape for _, s in split.train) >= 2
    assert caption_split(seed=0, fraction=0.2) == split
    assert caption_split(seed=1, fraction=0.2) != split


def test_held_out_captions_ask_for_every_held_out_pair():
    split = caption_split(seed=2, fraction=0.25)
    captions = held_out_captions(split, 3 * len(split.held_out), seed=0)
    scenes = [parse_caption(text) for text in captions]
    assert all(not s.missing() for s in scenes)
    asked = [(s.colour, s.shape) for s in scenes]
    assert set(asked) == split.held_out
    assert all(asked.count(pair) == 3 for pair in split.held_out)
    assert held_out_captions(split, 5, seed=0) == captions[:5]
