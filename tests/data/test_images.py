"""Image headers for the scan and RGB decoding for training, on real files of every kind."""

import numpy as np
import pytest
from PIL import Image

from edlib.data.images import ImageReadError, load_rgb, read_header
from tests.data.make_images import (
    write_16bit_png,
    write_animated,
    write_exif_rotated_jpeg,
    write_image,
    write_palette_png,
    write_png_header_only,
    write_text,
    write_truncated_jpeg,
)


def test_header_gives_size_without_decoding(tmp_path):
    path = write_image(tmp_path / "a.png", size=(37, 21))
    assert (read_header(path).width, read_header(path).height) == (37, 21)


def test_exif_rotation_swaps_size_and_load_rotates_pixels(tmp_path):
    path = write_exif_rotated_jpeg(tmp_path / "r.jpg", size=(40, 20), orientation=6)
    with Image.open(path) as raw:
        assert raw.size == (40, 20)  # stored landscape
    header = read_header(path)
    assert (header.width, header.height, header.orientation) == (20, 40, 6)
    im = load_rgb(path)
    assert im.size == (20, 40)
    # Orientation 6 = rotate 90 clockwise to display: the stored left (white) half ends up on top.
    top, bottom = np.asarray(im)[2, 10], np.asarray(im)[37, 10]
    assert top.min() > 200 and bottom.max() < 60


@pytest.mark.parametrize("orientation,swapped", [(1, False), (3, False), (5, True), (8, True)])
def test_only_quarter_turns_swap(tmp_path, orientation, swapped):
    path = write_exif_rotated_jpeg(tmp_path / "r.jpg", size=(30, 10), orientation=orientation)
    header = read_header(path)
    assert (header.width, header.height) == ((10, 30) if swapped else (30, 10))
    assert load_rgb(path).size == (header.width, header.height)


def test_zero_byte_file_is_refused_by_name(tmp_path):
    path = write_text(tmp_path / "empty.jpg", "")
    with pytest.raises(ImageReadError, match=r"empty\.jpg: empty file \(0 bytes\)"):
        read_header(path)


def test_text_file_named_png_is_refused(tmp_path):
    path = write_text(tmp_path / "notes.png", "these are my notes, not a picture")
    with pytest.raises(ImageReadError, match=r"notes\.png: not an image"):
        read_header(path)
    with pytest.raises(ImageReadError, match=r"notes\.png"):
        load_rgb(path)


def test_truncated_jpeg_is_refused_from_header_check(tmp_path):
    path = write_truncated_jpeg(tmp_path / "cut.jpg", size=(64, 64), keep=0.5)
    with Image.open(path) as im:
        assert im.size == (64, 64)  # the header alone looks fine
    with pytest.raises(ImageReadError, match=r"cut\.jpg: unreadable image \(truncated"):
        read_header(path)
    with pytest.raises(ImageReadError, match=r"cut\.jpg"):
        load_rgb(path)


def test_jpeg_with_trailing_bytes_is_still_accepted(tmp_path):
    path = write_image(tmp_path / "pad.jpg", size=(16, 16))
    path.write_bytes(path.read_bytes() + b"\0" * 10000)  # some cameras append data after EOI
    assert read_header(path).width == 16


def test_decompression_bomb_header_is_refused(tmp_path):
    path = write_png_header_only(tmp_path / "bomb.png", 20000, 20000)
    assert path.stat().st_size < 100
    with pytest.raises(ImageReadError, match=r"bomb\.png: refused.*decompression bomb"):
        read_header(path)
    with pytest.raises(ImageReadError, match=r"bomb\.png: refused"):
        load_rgb(path)


def test_image_just_over_the_pixel_limit_is_refused(tmp_path):
    # Between 1x and 2x Pillow's limit Pillow only warns; we refuse those too.
    path = write_png_header_only(tmp_path / "big.png", 10000, 10000)
    with pytest.raises(ImageReadError, match=r"big\.png: refused.*100000000 pixels"):
        read_header(path)


def test_one_pixel_image_is_usable(tmp_path):
    path = write_image(tmp_path / "dot.png", size=(1, 1), color=(1, 2, 3))
    assert (read_header(path).width, read_header(path).height) == (1, 1)
    assert load_rgb(path).getpixel((0, 0)) == (1, 2, 3)


def test_cmyk_becomes_rgb(tmp_path):
    path = write_image(tmp_path / "c.jpg", size=(8, 8), mode="CMYK", color=(0, 255, 255, 0))
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    im = load_rgb(path)
    assert im.mode == "RGB"
    r, g, b = im.getpixel((4, 4))
    assert r > 230 and g < 30 and b < 30  # full magenta + yellow = red


def test_16_bit_is_scaled_not_clipped(tmp_path):
    path = write_16bit_png(tmp_path / "g16.png", value=32896)  # 32896 / 257 = 128
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    im = load_rgb(path)
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (128, 128, 128)


def test_palette_with_transparency_goes_on_white(tmp_path):
    path = write_palette_png(tmp_path / "p.png", size=(16, 16), transparent=True)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert im.getpixel((0, 0)) == (255, 0, 0)
    assert im.getpixel((15, 0)) == (255, 255, 255)  # the transparent index


def test_palette_without_transparency_keeps_colors(tmp_path):
    im = load_rgb(write_palette_png(tmp_path / "p.png", size=(16, 16), transparent=False))
    assert im.getpixel((15, 0)) == (0, 0, 255)


def test_rgba_is_composited_on_white(tmp_path):
    path = tmp_path / "half.png"
    arr = np.zeros((4, 4, 4), dtype=np.uint8)
    arr[..., 0] = 255  # red
    arr[:, :2, 3] = 255  # left half opaque
    arr[:, 2:, 3] = 0  # right half fully transparent
    arr[0, 0, 3] = 128  # one half-transparent pixel
    Image.fromarray(arr, "RGBA").save(path)
    im = load_rgb(path)
    assert im.mode == "RGB"
    assert im.getpixel((1, 1)) == (255, 0, 0)
    assert im.getpixel((3, 3)) == (255, 255, 255)
    r, g, b = im.getpixel((0, 0))
    assert r == 255 and 120 < g < 135 and g == b  # halfway between red and white


@pytest.mark.parametrize("mode,color", [("L", 90), ("LA", (90, 255)), ("1", 1)])
def test_grayscale_modes_become_rgb(tmp_path, mode, color):
    path = write_image(tmp_path / "g.png", size=(6, 6), mode=mode, color=color)
    im = load_rgb(path)
    assert im.mode == "RGB"
    expected = 255 if mode == "1" else 90
    assert im.getpixel((3, 3)) == (expected, expected, expected)


def test_transparent_grayscale_goes_on_white(tmp_path):
    im = load_rgb(write_image(tmp_path / "la.png", size=(6, 6), mode="LA", color=(0, 0)))
    assert im.getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("suffix", [".gif", ".webp"])
def test_animated_gives_first_frame(tmp_path, suffix):
    path = write_animated(tmp_path / f"anim{suffix}", size=(16, 16))
    with Image.open(path) as raw:
        assert getattr(raw, "n_frames", 1) == 3
    assert (read_header(path).width, read_header(path).height) == (16, 16)
    r, g, b = load_rgb(path).getpixel((8, 8))
    assert r > 240 and g < 15 and b < 15  # the first frame is red


def test_bmp_and_jfif_are_read(tmp_path):
    bmp = write_image(tmp_path / "a.bmp", size=(5, 7))
    jfif = write_image(tmp_path / "b.jfif", size=(9, 3), fmt="JPEG")
    assert (read_header(bmp).width, read_header(bmp).height) == (5, 7)
    assert load_rgb(jfif).size == (9, 3)
