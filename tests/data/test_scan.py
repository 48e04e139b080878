"""Scanning real data roots in tmp_path: every rule of DESIGN.md "Data root semantics"."""

import json
import logging
import os
from fractions import Fraction

import pytest

from edlib.data.scan import format_report, report_json, scan
from edlib.data.types import Caption, DataRootError, Tag
from tests.data.make_images import (
    make_tree,
    tree_digest,
    write_16bit_png,
    write_animated,
    write_exif_rotated_jpeg,
    write_image,
    write_palette_png,
    write_png_header_only,
    write_text,
    write_truncated_jpeg,
)


def item(result, path):
    return next(i for i in result.items if i.path == path)


def test_sizes_captions_and_folders(tmp_path):
    write_image(tmp_path / "rare photo_01.png", size=(30, 20))
    write_image(tmp_path / "a" / "x.jpg", size=(64, 64))
    write_text(tmp_path / "a" / "x.txt", "from txt")
    write_text(tmp_path / "a" / "x.caption", "from caption")
    write_image(tmp_path / "a" / "y.webp", size=(64, 80))
    write_text(tmp_path / "a" / "y.caption", "from caption")
    write_text(tmp_path / "a" / "y.yaml", "main_prompt: from yaml")
    write_image(tmp_path / "a" / "b" / "z.PNG", size=(70, 65))
    write_text(tmp_path / "a" / "b" / "z.yaml", "main_prompt: from yaml\ntags: [t1, t2]")
    write_exif_rotated_jpeg(tmp_path / "a" / "b" / "rot.jpeg", size=(80, 64), orientation=8)
    (tmp_path / "empty_folder").mkdir()
    write_text(tmp_path / "notes" / "readme.txt", "not a caption")

    result = scan(tmp_path)

    assert [i.path for i in result.items] == ["a/b/rot.jpeg", "a/b/z.PNG", "a/x.jpg", "a/y.webp", "rare photo_01.png"]
    assert [(f.path, f.images) for f in result.folders] == [("", 1), ("a", 2), ("a/b", 2)]
    assert item(result, "rare photo_01.png").caption == Caption("rare photo")
    # several caption files of one image merge, as in EveryDream2: the later one's main
    # prompt wins (.txt < .caption < .yml < .yaml), the others' main prompts are dropped
    assert item(result, "a/x.jpg").caption == Caption("from caption")
    assert item(result, "a/y.webp").caption == Caption("from yaml")
    assert item(result, "a/b/z.PNG").caption == Caption("from yaml", (Tag("t1"), Tag("t2")))
    assert item(result, "a/b/rot.jpeg").caption == Caption("rot")
    assert (item(result, "a/b/rot.jpeg").width, item(result, "a/b/rot.jpeg").height) == (64, 80)
    assert (item(result, "a/y.webp").width, item(result, "a/y.webp").height) == (64, 80)
    assert item(result, "a/b/z.PNG").folder == "a/b"
    assert result.errors == [] and result.skipped == []
    assert result.ok


def test_bad_images_are_skipped_and_reported_without_stopping(tmp_path):
    write_image(tmp_path / "good.png", size=(64, 64))
    write_text(tmp_path / "zero.jpg", "")
    write_truncated_jpeg(tmp_path / "cut.jpg")
    write_text(tmp_path / "text.png", "I am text")
    write_png_header_only(tmp_path / "bomb.png", 20000, 20000)
    write_image(tmp_path / "dot.png", size=(1, 1))
    for name, writer in [
        ("cmyk.jpg", lambda p: write_image(p, size=(64, 64), mode="CMYK")),
        ("sixteen.png", lambda p: write_16bit_png(p, size=(64, 64))),
        ("pal.png", lambda p: write_palette_png(p, size=(64, 64))),
        ("rgba.png", lambda p: write_image(p, size=(64, 64), mode="RGBA")),
        ("gray.png", lambda p: write_image(p, size=(64, 64), mode="L")),
        ("anim.gif", lambda p: write_animated(p, size=(64, 64))),
        ("anim.webp", lambda p: write_animated(p, size=(64, 64))),
    ]:
        writer(tmp_path / name)

    result = scan(tmp_path)

    skipped = dict(result.skipped)
    assert sorted(skipped) == ["bomb.png", "cut.jpg", "text.png", "zero.jpg"]
    assert "empty file" in skipped["zero.jpg"]
    assert "truncated" in skipped["cut.jpg"]
    assert "not an image" in skipped["text.png"]
    assert "decompression bomb" in skipped["bomb.png"]
    for path in skipped:
        assert any(w.startswith(f"skipped {path}: ") for w in result.warnings)
    usable = {i.path for i in result.items}
    assert usable == {"good.png", "dot.png", "cmyk.jpg", "sixteen.png", "pal.png", "rgba.png", "gray.png", "anim.webp"}
    # GIF is not a training image type (DESIGN.md); it is reported, not silently dropped
    assert any(".gif is not a supported image type" in w and "anim.gif" in w for w in result.warnings)
    assert any("1 image(s) smaller than 64 px" in w and "dot.png, 1x1" in w for w in result.warnings)
    assert result.errors == []  # unusable images are skipped, not errors


@pytest.mark.parametrize(
    "text,found",
    [("abc", "'abc'"), ("", "'' (empty)"), ("-1", "'-1'"), ("0", "'0'"), ("nan", "'nan'"), ("1e309", "'1e309'")],
)
def test_bad_multiply_is_an_error_naming_file_and_text(tmp_path, text, found):
    make_tree(tmp_path, {"a/b": 2})
    write_text(tmp_path / "a" / "b" / "multiply.txt", text)
    result = scan(tmp_path)
    assert len(result.errors) == 1
    assert result.errors[0].startswith("a/b/multiply.txt: multiply must be")
    assert result.errors[0].endswith(f"found {found}")
    assert not result.ok
    assert result.folder("a/b").settings.multiply == 1  # the scan went on with the default


@pytest.mark.parametrize("raw", [b" 2.5\r\n", b"\xef\xbb\xbf2.5", b"\xef\xbb\xbf 2.5 \r\n\r\n"])
def test_good_multiply_with_whitespace_crlf_and_bom(tmp_path, raw):
    make_tree(tmp_path, {"a": 2})
    write_text(tmp_path / "a" / "multiply.txt", raw=raw)
    result = scan(tmp_path)
    assert result.errors == []
    assert result.folder("a").settings.multiply == Fraction(5, 2)
    assert result.folder("a").sources["multiply"] == "a/multiply.txt"


def test_multiply_and_loss_scale_do_not_cascade(tmp_path):
    make_tree(tmp_path, {"p": 2, "p/child": 3, "p/child/grand": 1})
    write_text(tmp_path / "p" / "multiply.txt", "4")
    write_text(tmp_path / "p" / "loss_scale.txt", "0.5")
    write_text(tmp_path / "p" / "flip_p.txt", "0.5")
    result = scan(tmp_path)
    assert result.folder("p").settings.multiply == 4
    assert result.folder("p").settings.loss_scale == 0.5
    for sub in ("p/child", "p/child/grand"):
        s = result.folder(sub).settings
        assert (s.multiply, s.loss_scale, s.flip_p) == (1, 1.0, 0.0)


def test_setting_file_in_folder_without_images_is_warned(tmp_path):
    make_tree(tmp_path, {"parent/kid": 2})
    write_text(tmp_path / "parent" / "multiply.txt", "3")
    result = scan(tmp_path)
    assert result.folder("parent/kid").settings.multiply == 1
    assert any(w.startswith("parent/multiply.txt: no images directly in parent") for w in result.warnings)


def test_near_miss_names_are_warned_with_the_right_name(tmp_path):
    make_tree(tmp_path, {"a": 1, "b": 1, "c": 1})
    write_text(tmp_path / "a" / "multiply.txt.txt", "2")
    write_text(tmp_path / "b" / "Loss_Scale.TXT", "2")
    write_text(tmp_path / "c" / "multiplier.txt", "2")
    write_text(tmp_path / "c" / "multiply.txt", "3")
    result = scan(tmp_path)
    expected = "a/multiply.txt.txt: ignored, did you mean multiply.txt? Rename it to multiply.txt to use it"
    assert expected in result.warnings
    assert any(w.startswith("b/Loss_Scale.TXT: ignored, did you mean loss_scale.txt?") for w in result.warnings)
    assert any(w.startswith("c/multiplier.txt: ignored") and "(multiply.txt also exists)" in w for w in result.warnings)
    assert result.folder("a").settings.multiply == 1  # misnamed files are not applied
    assert result.folder("c").settings.multiply == 3


def test_caption_of_an_image_is_never_a_near_miss(tmp_path):
    write_image(tmp_path / "multiplier.png", size=(64, 64))
    write_text(tmp_path / "multiplier.txt", "a calculator")
    result = scan(tmp_path)
    assert not any("did you mean" in w for w in result.warnings)
    assert result.items[0].caption == Caption("a calculator")


def test_global_yaml_inherited_and_overridden_by_local(tmp_path):
    make_tree(tmp_path, {"": 1, "a": 1, "a/b": 1, "a/b/c": 1, "d": 1})
    write_text(tmp_path / "a" / "global.yaml", "multiply: 2\nflip_p: 0.5\nshuffle_tags: true\n")
    write_text(tmp_path / "a" / "b" / "local.yaml", "multiply: 0.5\ncond_dropout: 0.2\n")
    result = scan(tmp_path)
    s = {f.path: f.settings for f in result.folders}
    assert (s["a"].multiply, s["a"].flip_p, s["a"].shuffle_tags) == (2, 0.5, True)
    assert (s["a/b"].multiply, s["a/b"].flip_p, s["a/b"].cond_dropout) == (Fraction(1, 2), 0.5, 0.2)
    assert (s["a/b/c"].multiply, s["a/b/c"].cond_dropout) == (2, None)  # local.yaml does not cascade
    assert (s[""].multiply, s["d"].multiply, s["d"].flip_p) == (1, 1, 0.0)
    assert result.folder("a/b/c").sources["multiply"] == "a/global.yaml"


def test_trigger_in_front_of_captions_without_cascade(tmp_path):
    write_image(tmp_path / "person" / "p1.png", size=(64, 64))
    write_text(tmp_path / "person" / "p1.txt", "a man smiling")
    write_image(tmp_path / "person" / "plain_02.png", size=(64, 64))
    write_image(tmp_path / "person" / "sub" / "s1.png", size=(64, 64))
    write_text(tmp_path / "person" / "trigger.txt", "ohwx\n")
    write_image(tmp_path / "other" / "o1.png", size=(64, 64))
    write_text(tmp_path / "other" / "local.yaml", "trigger: zkz style\n")
    result = scan(tmp_path)
    assert item(result, "person/p1.png").caption.text() == "ohwx, a man smiling"
    assert item(result, "person/plain_02.png").caption.text() == "ohwx, plain"
    assert item(result, "person/sub/s1.png").caption.text() == "s1"
    assert item(result, "other/o1.png").caption.text() == "zkz style, o1"
    triggers = {f["path"]: f["trigger"] for f in report_json(result)["folders"]}
    assert triggers == {"person": "ohwx", "person/sub": None, "other": "zkz style"}


def test_yaml_sidecar_with_tag_weights(tmp_path):
    write_image(tmp_path / "a.png", size=(64, 64))
    write_text(
        tmp_path / "a.yaml", "main_prompt: a castle\ntags:\n  - tag: night\n    weight: 2.5\n  - tag: snow\n  - fog\n"
    )
    write_image(tmp_path / "b.png", size=(64, 64))
    write_text(tmp_path / "b.yaml", "main_prompt: x\nmultiply: 3\nfoo: 1\n")
    result = scan(tmp_path)
    assert item(result, "a.png").caption == Caption("a castle", (Tag("night", 2.5), Tag("snow", 1.0), Tag("fog", 1.0)))
    assert result.item_settings(1).multiply == 3  # b.png's own multiply applies to it
    unknown = [w for w in result.warnings if "unknown key 'foo'" in w]
    assert len(unknown) == 1 and "b.yaml" in unknown[0]


def test_txt_and_yaml_for_one_image_are_merged(tmp_path):
    write_image(tmp_path / "a.png", size=(64, 64))
    write_text(tmp_path / "a.txt", "text main, t1")
    write_text(tmp_path / "a.yaml", "main_prompt: yaml main\ntags: [t2]")
    result = scan(tmp_path)
    assert result.items[0].caption == Caption("yaml main", (Tag("t2"), Tag("t1")))
    assert "text and .yaml captions of one image merged: 1 image" in result.everydream2


def test_invalid_utf8_caption_is_an_error_naming_the_file(tmp_path):
    write_image(tmp_path / "f" / "img.png", size=(64, 64))
    write_text(tmp_path / "f" / "img.txt", raw=b"caf\xe9 au lait")  # Latin-1, not UTF-8
    result = scan(tmp_path)
    assert len(result.errors) == 1
    assert result.errors[0].startswith("f/img.txt: not valid UTF-8")
    assert result.items[0].caption == Caption("img")  # counted, but the run refuses to start


def test_empty_caption_file_falls_back_to_file_name(tmp_path):
    write_image(tmp_path / "dog_1.png", size=(64, 64))
    write_text(tmp_path / "dog_1.txt", "  \n")
    result = scan(tmp_path)
    assert result.items[0].caption == Caption("dog")
    assert any("caption file(s) are empty" in w for w in result.warnings)


def test_each_applied_multiply_and_loss_scale_logged_once(tmp_path, caplog):
    make_tree(tmp_path, {"a": 3, "b": 2, "c": 1})
    write_text(tmp_path / "a" / "multiply.txt", "2.5")
    write_text(tmp_path / "b" / "loss_scale.txt", "-0.5")
    write_text(tmp_path / "c" / "global.yaml", "multiply: 0.1\n")
    with caplog.at_level(logging.INFO, logger="edlib.data"):
        result = scan(tmp_path)
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info.count("a/multiply.txt: 2.5 for 3 image(s) in a") == 1
    assert info.count("b/loss_scale.txt: -0.5 for 2 image(s) in b") == 1
    assert info.count("multiply from c/global.yaml: 0.1 for 1 image(s) in c") == 1
    assert len(info) == 3
    loud = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(loud) == 1 and "AWAY from these images" in loud[0] and loud[0].startswith("b/loss_scale.txt")
    assert loud[0] in result.warnings


def test_given_logger_is_used(tmp_path, caplog):
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "multiply.txt", "2")
    with caplog.at_level(logging.INFO, logger="my.run"):
        scan(tmp_path, logger=logging.getLogger("my.run"))
    assert [r.name for r in caplog.records] == ["my.run"]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_loops_do_not_hang(tmp_path):
    make_tree(tmp_path, {"a": 1, "a/b": 1})
    os.symlink(tmp_path / "a", tmp_path / "a" / "b" / "back_up")  # a/b/back_up -> a (a loop)
    os.symlink(tmp_path, tmp_path / "a" / "root_link")  # a loop to the root
    os.symlink("self", tmp_path / "self")  # a link to itself
    os.symlink(tmp_path / "missing.png", tmp_path / "a" / "broken.png")  # a dangling image link
    result = scan(tmp_path)
    assert sorted(f.path for f in result.folders) == ["a", "a/b"]
    assert len(result.items) == 2
    loops = [w for w in result.warnings if "symlink loop" in w]
    assert len(loops) == 2
    assert ("a/broken.png", "cannot read (No such file or directory)") in result.skipped


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlinked_folder_outside_root_is_followed(tmp_path):
    outside = tmp_path / "outside"
    make_tree(outside, {"": 2})
    root = tmp_path / "root"
    make_tree(root, {"own": 1})
    os.symlink(outside, root / "linked")
    result = scan(root)
    assert sorted(f.path for f in result.folders) == ["linked", "own"]


def test_missing_root_file_root_and_root_without_images(tmp_path):
    with pytest.raises(DataRootError, match=r"data root .*nope does not exist"):
        scan(tmp_path / "nope")
    write_text(tmp_path / "file.txt", "x")
    with pytest.raises(DataRootError, match=r"file\.txt is not a folder"):
        scan(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    write_text(empty / "sub" / "notes.txt", "no images here")
    with pytest.raises(DataRootError, match=r"empty holds no usable images$"):
        scan(empty)
    broken = tmp_path / "broken"
    write_text(broken / "a.png", "")
    with pytest.raises(DataRootError, match=r"holds no usable images; 1 image file\(s\) skipped: a\.png: empty file"):
        scan(broken)


def test_hidden_files_and_folders_are_ignored(tmp_path):
    make_tree(tmp_path, {"a": 1})
    write_text(tmp_path / "a" / "._photo.jpg", "macOS resource fork")
    write_image(tmp_path / ".ipynb_checkpoints" / "x.png", size=(64, 64))
    result = scan(tmp_path)
    assert [i.path for i in result.items] == ["a/a 0_000.png"]
    assert result.skipped == []


def test_scan_never_modifies_the_tree(tmp_path):
    root = tmp_path / "root"
    make_tree(root, {"a": 2, "a/b": 2})
    write_text(root / "a" / "multiply.txt", "abc")
    write_text(root / "a" / "b" / "x.txt", raw=b"\xff bad")
    write_truncated_jpeg(root / "cut.jpg")
    write_exif_rotated_jpeg(root / "rot.jpg")
    before = tree_digest(root)
    scan(root)
    scan(root)  # the cached path too
    scan(root, use_cache=False)
    assert tree_digest(root) == before


def test_report_json_shape(tmp_path):
    make_tree(tmp_path, {"a": 2, "b": 1})
    write_text(tmp_path / "a" / "multiply.txt", "0.5")
    write_text(tmp_path / "b" / "loss_scale.txt", "oops")
    report = report_json(scan(tmp_path))
    json.dumps(report)  # JSON-able
    assert set(report) == {
        "folders", "images", "excluded_images", "images_with_own_settings", "items", "everydream2", "warnings", "errors"
    }
    assert report["images"] == 3 and report["excluded_images"] == 0
    assert [(it["path"], it["caption"]) for it in report["items"]] == [("a/a 0_000.png", "a 0"), ("a/a 1_001.png", "a 1"),
                                                                       ("b/b 0_000.png", "b 0")]
    a, b = report["folders"]
    assert (a["path"], a["images"], a["multiply"], a["loss_scale"], a["trigger"]) == ("a", 2, 0.5, 1.0, None)
    assert b["path"] == "b" and b["loss_scale"] == 1.0
    assert report["errors"] == ["b/loss_scale.txt: loss_scale must be a number, found 'oops'"]


def test_format_report_table(tmp_path):
    make_tree(tmp_path, {"subject": 3, "preservation": 2})
    write_text(tmp_path / "preservation" / "multiply.txt", "0.1")
    write_text(tmp_path / "subject" / "trigger.txt", "ohwx")
    write_text(tmp_path / "subject" / "multiply.txt.txt", "2")
    write_text(tmp_path / "bad.png", "")
    text = format_report(scan(tmp_path))
    lines = text.splitlines()
    assert lines[0].endswith(": 5 images in 2 folders")
    header = next(line for line in lines if line.startswith("folder"))
    assert header.split() == ["folder", "images", "multiply", "loss_scale", "flip_p", "trigger"]
    assert any(line.split() == ["preservation", "2", "0.1", "1.0", "0.0"] for line in lines)
    assert any(line.split() == ["subject", "3", "1", "1.0", "0.0", "ohwx"] for line in lines)
    assert "did you mean multiply.txt?" in text
    assert "skipped 1 file(s)" in text
