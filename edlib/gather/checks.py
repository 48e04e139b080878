"""Checking one image that came in: readable, large enough, not too long, its signature,
and (for downloads) the bytes to keep.

Downloads are decoded with PIL, not by img2dataset: its OpenCV decoder ignores EXIF
orientation (`IMREAD_UNCHANGED`), so a phone photo would be stored on its side. edlib
applies the orientation (`load_rgb`), shrinks the image so its shorter side is at most
`image_size` (never enlarging it), and keeps the file as it came when nothing needs to
change. Each function here is pure and thread-safe: the flow runs them in a thread pool.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from edlib.data.images import ImageReadError, load_rgb, read_header
from edlib.gather import report as R
from edlib.gather.signature import Signature, file_signature, signature

JPEG_QUALITY = 95
_KEEP_AS_IS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp"}


@dataclass
class Checked:
    """The outcome for one image: a reason it is refused, or what to keep."""

    reason: str | None = None
    signature: Signature | None = None
    width: int = 0
    height: int = 0
    data: bytes | None = None  # downloads: the bytes to write
    ext: str = ""  # downloads: the extension for `data`
    detail: str = ""  # for a refusal: the decoder's words


def _size_reason(width: int, height: int, min_side: int, max_aspect: float) -> str | None:
    if min(width, height) < min_side:
        return R.TOO_SMALL
    if max(width, height) / min(width, height) > max_aspect:
        return R.ASPECT
    return None


def _unreadable(exc: ImageReadError) -> Checked:
    plain = exc.reason.startswith(("not an image", "empty file"))
    return Checked(reason=R.NOT_AN_IMAGE if plain else R.UNREADABLE, detail=exc.reason)


def check_download(path: Path, *, min_side: int, max_aspect: float, image_size: int) -> Checked:
    """Check a downloaded file and produce the bytes to keep (`image_size` 0: full size)."""
    try:
        header = read_header(path)
        if reason := _size_reason(header.width, header.height, min_side, max_aspect):
            return Checked(reason=reason, width=header.width, height=header.height)
        rgb = load_rgb(path)
    except ImageReadError as exc:
        return _unreadable(exc)
    sig = signature(rgb)
    width, height = rgb.size
    short = min(width, height)
    if image_size and short > image_size:
        scale = image_size / short
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rgb = rgb.resize(size, Image.LANCZOS, reducing_gap=3.0)
        return Checked(signature=sig, width=size[0], height=size[1], **_encode(rgb, "JPEG"))
    raw = path.read_bytes()
    with Image.open(io.BytesIO(raw)) as im:
        fmt, plain = im.format, im.mode in ("RGB", "L") and "transparency" not in im.info
    if fmt in _KEEP_AS_IS and plain and header.orientation == 1:
        return Checked(signature=sig, width=width, height=height, data=raw, ext=_KEEP_AS_IS[fmt])
    return Checked(signature=sig, width=width, height=height, **_encode(rgb, "PNG" if fmt == "PNG" else "JPEG"))


def _encode(rgb: Image.Image, fmt: str) -> dict:
    buf = io.BytesIO()
    if fmt == "PNG":
        rgb.save(buf, "PNG", optimize=False)
        return {"data": buf.getvalue(), "ext": ".png"}
    rgb.save(buf, "JPEG", quality=JPEG_QUALITY)
    return {"data": buf.getvalue(), "ext": ".jpg"}


def check_file(path: Path, *, min_side: int, max_aspect: float) -> Checked:
    """Check an image of a source folder (kept as it is, so only its size and signature)."""
    try:
        header = read_header(path)
    except ImageReadError as exc:
        return _unreadable(exc)
    if reason := _size_reason(header.width, header.height, min_side, max_aspect):
        return Checked(reason=reason, width=header.width, height=header.height)
    try:
        sig = file_signature(path)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        return Checked(reason=R.UNREADABLE, detail=str(exc))
    return Checked(signature=sig, width=header.width, height=header.height)


def aspect_ok(max_aspect: float) -> float:
    """`max_aspect` checked: a number >= 1 (inf allowed)."""
    if not max_aspect >= 1:  # also refuses NaN
        raise ValueError(f"the largest aspect ratio must be >= 1 (e.g. 2 for 2:1), got {max_aspect}")
    return float(max_aspect)
