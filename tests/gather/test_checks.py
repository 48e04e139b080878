"""Checking a downloaded file: EXIF orientation applied (img2dataset's decoder ignores it),
large images shrunk to the asked shorter side, plain files kept byte for byte, and the
reason words for files that cannot be used."""

import io

from PIL import Image

from edlib.gather import report as R
from edlib.gather.checks import check_download, check_file
from tests.data.make_images import (
    write_exif_rotated_jpeg,
    write_image,
    write_truncated_jpeg,
)


def _decoded(data: bytes) -> Image.Image:
    im = Image.open(io.BytesIO(data))
    im.load()
    return im


def test_a_phone_photo_is_stored_upright(tmp_path):
    path = write_exif_rotated_jpeg(tmp_path / "phone.jpg", size=(120, 80), orientation=6)
    out = check_download(path, min_side=64, max_aspect=2.0, image_size=0)
    assert out.reason is None and (out.width, out.height) == (80, 120)
    image = _decoded(out.data)
    assert image.size == (80, 120)
    assert image.getexif().get(0x0112, 1) == 1  # no orientation left to apply twice
    # The left half of the stored file was white; rotated 90 degrees it is the top half.
    assert image.convert("L").getpixel((40, 10)) > 200 and image.convert("L").getpixel((40, 110)) < 60


def test_large_images_are_shrunk_to_the_shorter_side(tmp_path):
    path = write_image(tmp_path / "big.png", size=(900, 600))
    out = check_download(path, min_side=256, max_aspect=2.0, image_size=300)
    assert (out.width, out.height) == (450, 300) and out.ext == ".jpg"
    assert _decoded(out.data).size == (450, 300)
    kept = check_download(path, min_side=256, max_aspect=2.0, image_size=0)
    assert kept.data == path.read_bytes() and kept.ext == ".png"  # nothing to change: the file as served


def test_transparency_is_composited_on_white(tmp_path):
    path = write_image(tmp_path / "logo.png", size=(100, 100), mode="RGBA", color=(0, 0, 0, 0))
    out = check_download(path, min_side=64, max_aspect=2.0, image_size=0)
    image = _decoded(out.data)
    assert out.ext == ".png" and image.mode == "RGB" and image.getpixel((50, 50)) == (255, 255, 255)


def test_reasons_for_files_that_cannot_be_used(tmp_path):
    page = tmp_path / "page.jpg"
    page.write_text("<html>moved</html>")
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    cut = write_truncated_jpeg(tmp_path / "cut.jpg")
    small = write_image(tmp_path / "small.png", size=(100, 63))
    long = write_image(tmp_path / "long.png", size=(300, 100))
    for check in (lambda p: check_download(p, min_side=64, max_aspect=2.0, image_size=0), lambda p: check_file(p, min_side=64, max_aspect=2.0)):
        assert check(page).reason == R.NOT_AN_IMAGE
        assert check(empty).reason == R.NOT_AN_IMAGE
        assert check(cut).reason == R.UNREADABLE
        assert check(small).reason == R.TOO_SMALL
        assert check(long).reason == R.ASPECT
