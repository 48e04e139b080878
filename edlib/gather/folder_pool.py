"""A big local folder as the source (an FFHQ-style pool): list it, draw from it reproducibly,
and find each image's caption as the scan would.

The listing is every image below the folder (hidden files and folders skipped, as the scan
does), sorted by relative path; the draw order is a seeded permutation of that listing, so
the same folder and seed give the same images in the same order on any machine.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edlib.data.captions import CaptionError, decode_text, stem_caption
from edlib.data.types import IMAGE_EXTENSIONS
from edlib.gather.errors import GatherError


@dataclass
class Pool:
    """The images of a source folder and the order they will be drawn in."""

    root: Path
    paths: list[str]  # relative POSIX paths, sorted
    order: np.ndarray  # indexes into `paths`, in draw order


def list_pool(root: str | Path, *, seed: int = 0) -> Pool:
    """Every image below `root`, and the seeded order to draw them in."""
    root = Path(root).expanduser().absolute()
    if not root.is_dir():
        raise GatherError(f"{root}: no such folder")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        for name in filenames:
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                paths.append(prefix + name)
    if not paths:
        raise GatherError(
            f"{root}: no images found below this folder (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})"
        )
    paths.sort()
    return Pool(root, paths, np.random.default_rng(seed).permutation(len(paths)))


@dataclass(frozen=True)
class SourceCaption:
    """A source image's caption: text for a `.txt`, or the bytes of an EveryDream2 `.yaml`
    sidecar to copy as it is (its tags and weights have no plain-text form)."""

    text: str | None = None
    yaml: bytes | None = None
    yaml_suffix: str = ".yaml"


def source_caption(image: Path) -> SourceCaption:
    """The caption of `image` in the scan's order: `.txt`, `.caption`, `.yaml`/`.yml`,
    else the file name up to the first `_`. Raises CaptionError for a file that is not
    UTF-8."""
    stem = image.with_suffix("")
    for suffix in (".txt", ".caption"):
        side = stem.with_name(stem.name + suffix)
        if side.is_file():
            return SourceCaption(text=decode_text(side.read_bytes(), str(side)))
    for suffix in (".yaml", ".yml"):
        side = stem.with_name(stem.name + suffix)
        if side.is_file():
            data = side.read_bytes()
            decode_text(data, str(side))  # UTF-8 or a clear error, as the scan would
            return SourceCaption(yaml=data, yaml_suffix=suffix)
    return SourceCaption(text=stem_caption(image.stem).main_prompt)


def flat_name(rel: str, taken_stems: set[str]) -> str:
    """A file name for `rel` in the gathered folder: its own name when its stem is free
    (an image and its caption share the stem, so a.png and a.jpg cannot both come), else
    its path with "/" as "__" (pools often repeat names like 0001.png in every subfolder).
    `taken_stems` holds lower-case stems already used."""
    name = rel.rsplit("/", 1)[-1]
    stem, ext = os.path.splitext(name)
    if stem.lower() not in taken_stems:
        return name
    stem = os.path.splitext(rel.replace("/", "__"))[0]
    candidate, n = stem, 2
    while candidate.lower() in taken_stems:
        candidate = f"{stem}-{n}"
        n += 1
    return candidate + ext


__all__ = ["CaptionError", "Pool", "SourceCaption", "flat_name", "list_pool", "source_caption"]
