"""Write toy-world data roots, and split the caption space for honest evaluation.

`write_data_root` turns a small spec into folders of PNG images with `.txt` captions
(and `multiply.txt` / `loss_scale.txt` where asked): the demo's data root, test
fixtures and benchmark data all come from here. The same seed gives the same files, and
each folder draws from its own random stream, so adding a folder changes no other.

`caption_split` holds some (colour, shape) pairs out of training while every colour and
every shape still appears in training with other partners: a model that draws a held-out
pair has composed two things it learned separately, not memorised a caption.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from edlib.world.grammar import caption, sample_scene
from edlib.world.render import COLOURS, SHAPES, render

# Spec keys passed straight to `sample_scene`.
_SCENE_KEYS = ("shapes", "colours", "backgrounds", "sizes", "positions", "exclude")
_FOLDER_KEYS = {"count", "multiply", "loss_scale", *_SCENE_KEYS}


def _folder_rng(seed: int, folder: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(folder.encode("utf-8"))])


def _check_number(folder: str, key: str, value: Any, *, positive: bool) -> str:
    """The file text for a multiply/loss_scale value, checked so the scan will accept it."""
    text = str(value).strip()
    try:
        number = Fraction(text)
    except ValueError:
        raise ValueError(f"folder {folder!r}: {key} {value!r} is not a number") from None
    if positive and number <= 0:
        raise ValueError(f"folder {folder!r}: {key} must be > 0, got {value!r}")
    return text


def write_data_root(
    root: str | Path, spec: Mapping[str, Mapping[str, Any]], *, seed: int, size: int = 64
) -> dict[str, int]:
    """Write one folder of rendered images per entry of `spec` under `root`.

    `spec` maps a folder path (relative, "/"-separated, nesting allowed) to its settings:
    `count` images (required); `shapes`, `colours`, `backgrounds`, `sizes`, `positions`
    and `exclude` restrict the scenes as in `sample_scene`; `multiply` and `loss_scale`
    (text or number, None for none) are written as `multiply.txt` / `loss_scale.txt`.
    Images are `NNNNN.png` with the full caption in `NNNNN.txt`.

    Refuses to write into a folder that already holds files, so it can never overwrite a
    user's data. Returns folder -> number of images written.
    """
    root = Path(root)
    plans = []
    for folder, settings in spec.items():
        unknown = set(settings) - _FOLDER_KEYS
        if unknown:
            raise ValueError(
                f"folder {folder!r}: unknown spec keys {sorted(unknown)}; "
                f"known: {sorted(_FOLDER_KEYS)}"
            )
        count = settings.get("count")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"folder {folder!r}: count must be a whole number >= 0, got {count!r}")
        target = root / folder
        if target.exists() and any(target.iterdir()):
            raise FileExistsError(
                f"{target} already holds files; a data root is only written into empty folders"
            )
        files = {
            name: _check_number(folder, key, settings[key], positive=key == "multiply")
            for key, name in (("multiply", "multiply.txt"), ("loss_scale", "loss_scale.txt"))
            if settings.get(key) is not None
        }
        restrictions = {k: settings[k] for k in _SCENE_KEYS if settings.get(k) is not None}
        if "exclude" in restrictions:
            restrictions["exclude"] = {tuple(pair) for pair in restrictions["exclude"]}
        try:  # one trial draw checks the restrictions leave something to draw
            sample_scene(np.random.default_rng(0), **restrictions)
        except ValueError as error:
            raise ValueError(f"folder {folder!r}: {error}") from None
        plans.append((folder, target, count, restrictions, files))

    # Everything is checked before the first file is written.
    written = {}
    for folder, target, count, restrictions, files in plans:
        target.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (target / name).write_text(text + "\n", encoding="utf-8")
        rng = _folder_rng(seed, folder)
        for i in range(count):
            scene = sample_scene(rng, **restrictions)
            render(scene, size).save(target / f"{i:05d}.png")
            (target / f"{i:05d}.txt").write_text(caption(scene) + "\n", encoding="utf-8")
        written[folder] = count
    return written


@dataclass(frozen=True)
class CaptionSplit:
    """(colour, shape) pairs for training and pairs held out of it."""

    train: frozenset[tuple[str, str]]
    held_out: frozenset[tuple[str, str]]


def caption_split(
    *,
    seed: int = 0,
    fraction: float = 0.2,
    shapes: Iterable[str] = SHAPES,
    colours: Iterable[str] = COLOURS,
) -> CaptionSplit:
    """Hold out about `fraction` of the (colour, shape) pairs, keeping at least two
    training pairs for every colour and every shape."""
    shapes, colours = tuple(shapes), tuple(colours)
    pairs = [(c, s) for c in colours for s in shapes]
    order = _folder_rng(seed, "caption_split").permutation(len(pairs))
    wanted = round(fraction * len(pairs))
    held_out: set[tuple[str, str]] = set()
    for colour, shape in (pairs[i] for i in order):
        if len(held_out) == wanted:
            break
        colour_left = sum(1 for c, s in pairs if c == colour and (c, s) not in held_out)
        shape_left = sum(1 for c, s in pairs if s == shape and (c, s) not in held_out)
        if colour_left > 2 and shape_left > 2:
            held_out.add((colour, shape))
    return CaptionSplit(train=frozenset(pairs) - held_out, held_out=frozenset(held_out))


def held_out_captions(split: CaptionSplit, count: int, *, seed: int = 0) -> list[str]:
    """`count` full captions of scenes whose (colour, shape) pair is held out.

    The pairs take turns, so every held-out pair is asked about as evenly as `count`
    allows; sizes, positions and backgrounds are random.
    """
    if not split.held_out:
        raise ValueError("the split holds nothing out")
    pairs = sorted(split.held_out)
    rng = _folder_rng(seed, "held_out_captions")
    captions = []
    for i in range(count):
        colour, shape = pairs[i % len(pairs)]
        captions.append(caption(sample_scene(rng, shapes=[shape], colours=[colour])))
    return captions
