"""Reading images: sizes from headers for the scan, full RGB decoding for training.

The scan must be fast on trees of 100,000 images, so `read_header` never decodes pixels:
PIL's `Image.open` only parses the header. It still catches what would break training
later: files that are not images, decompression bombs, and files cut short (a truncated
download or copy), which is checked cheaply from the file's tail and confirmed by a full
decode only when the tail looks wrong.

`load_rgb` is the one place training turns a file into pixels, so every odd mode a user's
folder may hold (CMYK, 16-bit, palette, alpha, animation) becomes plain 8-bit RGB here.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edlib.data.small_files import file_kind
from edlib.data.types import DataRootError

# Pillow's own limit (about 9500 x 9500): larger images are refused, not decoded, because a
# small file can claim a huge size and exhaust memory (a "decompression bomb").
MAX_PIXELS = Image.MAX_IMAGE_PIXELS

# EXIF orientations 5..8 rotate by 90 or 270 degrees, so width and height swap.
_EXIF_ORIENTATION_TAG = 0x0112
_SWAPPING_ORIENTATIONS = frozenset({5, 6, 7, 8})

# How far from the end a JPEG's end-of-image marker may sit (some cameras append padding).
_JPEG_TAIL_BYTES = 4096


class ImageReadError(DataRootError):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageHeader:
    """What the scan needs from an image: its size after EXIF orientation."""

    width: int
    height: int
    orientation: int = 1


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Size of the image at `path` from its header, with EXIF orientation applied.

    Raises `ImageReadError` naming the file if it is empty, not an image, a decompression
    bomb or truncated.
    """
    try:
        with _open_regular(path) as fp:
            with warnings.catch_warnings():
                # Pillow only warns between 1x and 2x its limit; refuse all of them alike.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(fp)
            width, height = im.size
            _check_pixel_count(path, width, height)
            orientation = _orientation(im)
            if not _tail_looks_complete(im.format, fp):
                # Rare for good files: confirm by decoding; a cut-short file raises OSError.
                im.load()
    except ImageReadError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageReadError(path, f"refused, image is too large (decompression bomb?): {exc}") from exc
    except UnidentifiedImageError as exc:
        size = _file_size(path)
        what = "empty file (0 bytes)" if size == 0 else "not an image (content not recognised)"
        raise ImageReadError(path, what) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"unreadable image (truncated or corrupt): {exc}") from exc
    if orientation in _SWAPPING_ORIENTATIONS:
        width, height = height, width
    return ImageHeader(width, height, orientation)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode an image for training: 8-bit RGB, EXIF-rotated, transparency on white,
    first frame of an animation. Raises `ImageReadError` naming the file on failure."""
    try:
        with _open_regular(path) as fp, Image.open(fp) as im:
            _check_pixel_count(path, *im.size)
            im.seek(0)
            im.load()
            im = ImageOps.exif_transpose(im)
            return _to_rgb(im)
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, f"refused, image is too large (decompression bomb?): {exc}") from exc
    except FileNotFoundError as exc:
        raise ImageReadError(path, "no such file (moved to the quarantine, renamed or deleted?)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageReadError(path, f"cannot decode image: {exc}") from exc


def _open_regular(path):
    """The file at `path` opened for binary reading, refused (`ImageReadError`) unless it is
    a regular file: opening a named pipe would wait forever for a writer, and a device such
    as /dev/urandom never ends. O_NONBLOCK makes the open itself return at once."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    kind = file_kind(os.fstat(fd).st_mode)
    if kind is not None:
        os.close(fd)
        raise ImageReadError(path, f"{kind}, not an image file")
    return os.fdopen(fd, "rb")


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        im = _sixteen_bit_to_l(im)
    if im.mode == "P":
        # Palette images may carry transparency; expand it to an alpha channel first.
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "L" and "transparency" in im.info:
        im = im.convert("LA")
    elif im.mode == "RGB" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB") if im.mode != "RGB" else im


def _sixteen_bit_to_l(im: Image.Image) -> Image.Image:
    """16-bit grayscale to 8-bit by scaling, not clipping (Pillow's convert clips at 255)."""
    values = np.asarray(im).astype(np.float64)
    top = 65535.0 if values.max(initial=0) > 255 or im.mode.startswith("I;16") else 255.0
    return Image.fromarray(np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8), "L")


def _check_pixel_count(path, width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise ImageReadError(
            path,
            f"refused, {width}x{height} is {width * height:,} pixels, more than the "
            f"limit of {MAX_PIXELS:,} (decompression bomb?); resize it to use it"
        )
    if width < 1 or height < 1:
        raise ImageReadError(path, f"header claims an empty size {width}x{height}")


def _orientation(im: Image.Image) -> int:
    """EXIF orientation from EXIF bytes already parsed with the header, never decoding.

    Pillow's `getexif()` decodes a whole PNG to find a late eXIf chunk; we only look at
    EXIF found before the pixel data, which is where JPEG and WebP keep it.
    """
    raw = im.info.get("exif")
    if not raw:
        return 1
    exif = Image.Exif()
    try:
        exif.load(raw)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError):
        return 1  # broken EXIF: the pixels are still fine, treat as unrotated
    value = exif.get(_EXIF_ORIENTATION_TAG, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _tail_looks_complete(fmt: str | None, fp) -> bool:
    """Cheap check that a file was not cut short, from the bytes at its end."""
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    if fmt == "JPEG":
        fp.seek(max(0, size - _JPEG_TAIL_BYTES))
        return b"\xff\xd9" in fp.read()
    if fmt == "PNG":
        fp.seek(max(0, size - 12))
        return b"IEND" in fp.read()
    if fmt == "GIF":
        fp.seek(max(0, size - 1))
        return fp.read() == b";"
    if fmt == "WEBP":
        fp.seek(4)
        riff_size = int.from_bytes(fp.read(4), "little")
        return size >= riff_size + 8
    if fmt == "BMP":
        fp.seek(2)
        declared = int.from_bytes(fp.read(4), "little")
        return declared == 0 or size >= declared
    return True


def _file_size(path) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return -1
