"""Fixtures for the gather tests: a small data root, toy-world images as bytes, and an
inventory of URLs served from a real HTTP server on 127.0.0.1 covering every outcome."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from edlib.gather.signature import DuplicateIndex, signature
from edlib.world import write_data_root
from edlib.world.render import Scene, render
from tests.gather.http_server import ImageServer, closed_port_url

# Training images: stars only, so the served scenes (other shapes) are not copies of them.
TRAINING_SPEC = {"concept": {"count": 6, "shapes": ["star"]}}
_GOOD_SHAPES = ("circle", "square", "triangle", "diamond", "cross", "heart")
_COLOURS = ("red", "blue", "green", "yellow", "purple", "black")
_BACKGROUNDS = ("white", "orange", "white", "purple", "white", "yellow")


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    image.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def good_scenes(n: int) -> list[Scene]:
    """`n` toy-world scenes that are far from each other (and from the star training set)."""
    scenes = []
    for i in range(n):
        shape = _GOOD_SHAPES[i % len(_GOOD_SHAPES)]
        colour = _COLOURS[(i // len(_GOOD_SHAPES) + i) % len(_COLOURS)]
        background = _BACKGROUNDS[(i * 5 + 1) % len(_BACKGROUNDS)]
        if background == colour:
            background = "white" if colour != "white" else "black"
        scenes.append(Scene(shape=shape, colour=colour, size="large", position="center", background=background))
    index = DuplicateIndex()
    for i, s in enumerate(scenes):
        sig = signature(render(s, 96))
        assert index.find(sig) is None, f"test scenes {i} and {index.find(sig)} look alike; pick others"
        index.add(sig, str(i))
    return scenes


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_data_root(root, TRAINING_SPEC, seed=3, size=64)
    return root


@pytest.fixture(scope="module")
def server():
    with ImageServer() as srv:
        yield srv


@dataclass
class Row:
    url: str
    caption: str | None
    kind: str  # what the row is meant to test
    width: int | None = None
    height: int | None = None
    score: float = 1.0


def inventory(server: ImageServer, data_root: Path, prefix: str, *, good: int = 12, slow: bool = True, unreachable: bool = True) -> list[Row]:
    """Rows covering every outcome, served under `prefix` (so tests sharing a server do not
    mix their request counts). Good images are 96 px; the test gathers at resolution 64."""
    rows = []
    scenes = good_scenes(good)
    first = None
    for i, scene in enumerate(scenes):
        image = render(scene, 96)
        url = server.add(f"{prefix}/good{i}.png", png_bytes(image))
        rows.append(Row(url, f"good photo {i}", "good", 96, 96))
        first = first or image
    # Copies of good0: the same bytes at another URL, and a smaller JPEG of it.
    rows.append(Row(server.add(f"{prefix}/copy_same.png", png_bytes(first)), "copy of good 0", "dup", 96, 96))
    rows.append(Row(server.add(f"{prefix}/copy_small.jpg", jpeg_bytes(first.resize((72, 72), Image.LANCZOS)), "image/jpeg"), "smaller copy", "dup"))
    training = Image.open(data_root / "concept" / "00000.png").convert("RGB").resize((80, 80), Image.LANCZOS)
    rows.append(Row(server.add(f"{prefix}/training_copy.jpg", jpeg_bytes(training), "image/jpeg"), "a star", "dup_training"))
    rows.append(Row(server.url(f"{prefix}/missing1.png"), "missing one", "404"))
    rows.append(Row(server.url(f"{prefix}/missing2.png"), "missing two", "404"))
    rows.append(Row(server.add(f"{prefix}/page.jpg", b"<html><body>not here</body></html>", "image/jpeg"), "a web page", "not_image"))
    rows.append(Row(server.add(f"{prefix}/tiny.png", png_bytes(render(Scene("circle", "red", "large", "center", "white"), 40))), "tiny", "too_small"))
    wide = Image.new("RGB", (300, 96), (20, 120, 200))
    rows.append(Row(server.add(f"{prefix}/wide.png", png_bytes(wide)), "a wide band", "aspect"))
    # Removed before downloading: a size in the list too small, a low score, no caption, a repeat.
    small_in_list = server.add(f"{prefix}/listed_small.png", png_bytes(render(scenes[1], 96)))
    rows.append(Row(small_in_list, "listed small", "list_small", 20, 20))
    low = server.add(f"{prefix}/low_score.png", png_bytes(render(scenes[2], 96)))
    rows.append(Row(low, "low score", "low_score", 96, 96, score=0.1))
    rows.append(Row(server.add(f"{prefix}/uncaptioned.png", png_bytes(render(scenes[3], 96))), None, "no_caption"))
    rows.append(Row(rows[4].url, "good photo 4 again", "listed_twice", 96, 96))
    if slow:
        rows.append(Row(server.add(f"{prefix}/slow.png", png_bytes(render(scenes[5], 96)), delay=6.0), "slow", "timeout"))
    if unreachable:
        rows.append(Row(closed_port_url(f"{prefix}/gone.png"), "gone", "unreachable"))
    return rows
