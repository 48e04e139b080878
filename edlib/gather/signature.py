"""Near-duplicate detection: a perceptual signature per image and an index to search.

A signature is two small things computed from a 32x32 copy of the image:

- a 64-bit difference hash (dHash): for each of 8 rows of a 9x8 grey thumbnail, whether
  each pixel is brighter than its right neighbour by more than 2 grey levels (the margin
  keeps flat areas, where neighbours are equal, from flipping bits with JPEG noise);
- an 8x8 colour thumbnail. A grey hash cannot tell a red circle on blue from a green one
  on purple (same shapes, same brightness order); the thumbnail can.

Two images are near-duplicates when both agree: hashes within `MAX_HAMMING` bits and
thumbnails within `MAX_COLOUR_DIFF` (of 255) in every cell. Measured on toy-world scenes
and smooth random colour fields (`tests/gather/test_signature.py` keeps the cases):
copies resized to 48-256 px and saved as JPEG at quality 40-90 stay within 7 bits and 27
levels; different images whose hashes agree differ by 41 levels or more somewhere.
Mirrored images are different images here (a scene "on the left" is not one "on the
right", and training flips only where flip_p.txt asks).

PIL and numpy only; no extra dependency.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps

MAX_HAMMING = 10
MAX_COLOUR_DIFF = 34
_EDGE = 2  # grey levels a pixel must exceed its neighbour by to set a bit

_WORK_SIZE = 32
_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class Signature:
    """What near-duplicate detection keeps of an image."""

    dhash: int  # 64 bits
    thumb: bytes  # 8x8 RGB, 192 bytes


def signature(image: Image.Image) -> Signature:
    """The signature of an image."""
    small = image.convert("RGB").resize((_WORK_SIZE, _WORK_SIZE), Image.BOX)
    grey = np.asarray(small.convert("L").resize((9, 8), Image.BOX), dtype=np.int16)
    bits = ((grey[:, 1:] - grey[:, :-1]) > _EDGE).ravel()
    dhash = int.from_bytes(np.packbits(bits).tobytes(), "big")
    thumb = np.asarray(small.resize((8, 8), Image.BOX), dtype=np.uint8).tobytes()
    return Signature(dhash, thumb)


def file_signature(path: str | os.PathLike) -> Signature:
    """Signature of an image file, decoded at reduced size where the format allows (JPEG
    decodes at 1/2 to 1/8 scale), with EXIF orientation applied. Raises OSError or
    PIL's errors for files that are not images."""
    with Image.open(path) as im:
        im.draft("RGB", (_WORK_SIZE * 2, _WORK_SIZE * 2))
        im = ImageOps.exif_transpose(im)
        return signature(im.convert("RGB"))


class DuplicateIndex:
    """Signatures of images already accepted, each with a label (a file name, or
    "training:" plus a path), searched in bulk with numpy."""

    def __init__(self) -> None:
        self._hashes = np.zeros(0, dtype=np.uint64)
        self._thumbs = np.zeros((0, 192), dtype=np.int16)
        self._labels: list[str] = []
        self._pending_h: list[int] = []
        self._pending_t: list[bytes] = []

    def __len__(self) -> int:
        return len(self._labels)

    def add(self, sig: Signature, label: str) -> None:
        self._pending_h.append(sig.dhash)
        self._pending_t.append(sig.thumb)
        self._labels.append(label)

    def find(self, sig: Signature) -> str | None:
        """The label of an indexed near-duplicate of `sig`, or None."""
        self._flush()
        if not len(self._hashes):
            return None
        xor = np.bitwise_xor(self._hashes, np.uint64(sig.dhash))
        hamming = _POPCOUNT[xor.view(np.uint8).reshape(-1, 8)].sum(axis=1)
        close = np.flatnonzero(hamming <= MAX_HAMMING)
        if not len(close):
            return None
        thumb = np.frombuffer(sig.thumb, dtype=np.uint8).astype(np.int16)
        diff = np.abs(self._thumbs[close] - thumb).max(axis=1)
        hit = close[diff <= MAX_COLOUR_DIFF]
        return self._labels[int(hit[0])] if len(hit) else None

    def _flush(self) -> None:
        if not self._pending_h:
            return
        self._hashes = np.concatenate([self._hashes, np.array(self._pending_h, dtype=np.uint64)])
        new = np.frombuffer(b"".join(self._pending_t), dtype=np.uint8).reshape(-1, 192).astype(np.int16)
        self._thumbs = np.concatenate([self._thumbs, new])
        self._pending_h.clear()
        self._pending_t.clear()


def to_json(sig: Signature) -> str:
    """A signature as text for a JSON state file: 16 hex digits, a colon, 384 hex digits."""
    return f"{sig.dhash:016x}:{sig.thumb.hex()}"


def from_json(text: str) -> Signature:
    h, _, t = text.partition(":")
    return Signature(int(h, 16), bytes.fromhex(t))
