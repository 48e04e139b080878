"""Writers for test images of every kind a user's folder may hold, and small data roots.

Other test packages import these (e.g. `make_tree` for schedule and preview tests). Every
writer creates parent folders, writes real files with pillow and returns the path.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

_EXIF_ORIENTATION = 0x0112
_DEFAULT_COLORS = {
    "RGB": (200, 40, 40),
    "RGBA": (200, 40, 40, 255),
    "L": 128,
    "LA": (128, 255),
    "CMYK": (0, 200, 200, 0),
}


def _prepare(path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def write_image(path, size=(32, 24), mode="RGB", color=None, fmt=None, **save_kwargs) -> Path:
    """A solid image of `size` (width, height) in `mode`; the format follows the suffix."""
    path = _prepare(path)
    if color is None:
        color = _DEFAULT_COLORS.get(mode, 1)
    Image.new(mode, size, color).save(path, format=fmt, **save_kwargs)
    return path


def write_exif_rotated_jpeg(path, size=(40, 20), orientation=6) -> Path:
    """A JPEG stored as `size` whose EXIF orientation says to rotate it (6 = 90 degrees)."""
    path = _prepare(path)
    exif = Image.Exif()
    exif[_EXIF_ORIENTATION] = orientation
    im = Image.new("RGB", size, (10, 20, 30))
    im.paste((250, 250, 250), (0, 0, size[0] // 2, size[1]))  # left half white: shows the rotation
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def write_png_header_only(path, width=20000, height=20000) -> Path:
    """A tiny PNG whose header claims `width` x `height` (a decompression bomb's header)."""
    path = _prepare(path)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunks = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunks)
    return path


def write_truncated_jpeg(path, size=(64, 64), keep=0.5) -> Path:
    """A real JPEG cut to `keep` of its bytes, as after an interrupted copy."""
    path = _prepare(path)
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def write_animated(path, size=(16, 16), colors=((255, 0, 0), (0, 255, 0), (0, 0, 255))) -> Path:
    """An animated GIF or WebP (by suffix) with one solid frame per color."""
    path = _prepare(path)
    frames = [Image.new("RGB", size, c) for c in colors]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def write_16bit_png(path, size=(16, 8), value=65535) -> Path:
    """A 16-bit grayscale PNG filled with `value` (0..65535)."""
    path = _prepare(path)
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint16)).save(path)
    return path


def write_palette_png(path, size=(16, 16), transparent=True) -> Path:
    """A palette ("P") PNG: left half red, right half palette index 1, transparent if asked."""
    path = _prepare(path)
    im = Image.new("P", size, 0)
    im.putpalette([255, 0, 0, 0, 0, 255] + [0, 0, 0] * 254)
    im.paste(1, (size[0] // 2, 0, size[0], size[1]))
    if transparent:
        im.save(path, transparency=1)
    else:
        im.save(path)
    return path


def write_text(path, text: str = "", *, bom: bool = False, raw: bytes | None = None) -> Path:
    """A text file in UTF-8 (optionally with a BOM), or exactly `raw` bytes."""
    path = _prepare(path)
    path.write_bytes(raw if raw is not None else (b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def make_tree(root, folders: dict[str, int], size=(32, 32), suffix=".png") -> list[Path]:
    """A data root with `folders[rel]` images in each folder, named `img{i}_{n}` so their
    file-name captions differ per folder ("" is the root itself)."""
    paths = []
    for rel, count in folders.items():
        for i in range(count):
            name = f"{rel.replace('/', '-') or 'root'} {i}_{i:03d}{suffix}"
            paths.append(write_image(Path(root) / rel / name, size=size))
    return paths


def tree_digest(root) -> dict[str, str]:
    """sha256 of every file below `root` by relative path (symlinks not followed), to prove
    a scan changed nothing."""
    root = Path(root)
    out = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            out[str(path.relative_to(root))] = "link:" + str(path.readlink())
        elif path.is_file():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out
