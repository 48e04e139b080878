"""The caption grammar of the toy world: sample scenes, write captions, read them back.

A full caption reads "a small red circle on the left on a blue background". Size,
colour, position and background are each optional in a prompt ("a red zorblat", "a
circle on a white background"), so `parse_caption` returns a `Scene` with only the asked
fields set: the check compares a generated image with exactly what its prompt asked for.

The grammar is one regular expression built from the word lists, so what `caption`
writes and what `parse_caption` accepts cannot drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Sequence

import numpy as np

from edlib.world.render import ALL_SHAPES, COLOURS, NOVEL_SHAPES, POSITIONS, SHAPES, SIZES, Scene

POSITION_PHRASES: dict[str, str] = {
    "center": "in the center",
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
}
_PHRASE_POSITIONS = {phrase: position for position, phrase in POSITION_PHRASES.items()}


def _alternatives(words: Iterable[str]) -> str:
    return "|".join(re.escape(w) for w in words)


_CAPTION = re.compile(
    rf"an? (?:(?P<size>{_alternatives(SIZES)}) )?"
    rf"(?:(?P<colour>{_alternatives(COLOURS)}) )?"
    rf"(?P<shape>{_alternatives(ALL_SHAPES)})"
    rf"(?: (?P<position>{_alternatives(_PHRASE_POSITIONS)}))?"
    rf"(?: on an? (?P<background>{_alternatives(COLOURS)}) background)?"
)


def _words(*texts: str) -> set[str]:
    return {w for text in texts for w in text.split()}


# Every word a caption of the base world can contain (for a tiny tokenizer's vocabulary).
VOCABULARY: tuple[str, ...] = tuple(
    sorted(_words("a an on background", *SIZES, *COLOURS, *SHAPES, *POSITION_PHRASES.values()))
)


def vocabulary(extra_words: Iterable[str] = (), *, novel: bool = True) -> tuple[str, ...]:
    """The sorted vocabulary, with the novel shape names (unless `novel=False`) and any
    `extra_words` (made-up words a fine-tune will teach) added.

    A tokenizer built from this knows the made-up words as single tokens whose
    embeddings pretraining never touched: exactly the "new word" a fine-tune teaches.
    """
    words = set(VOCABULARY) | set(extra_words)
    if novel:
        words |= set(NOVEL_SHAPES)
    bad = sorted(w for w in words if not re.fullmatch(r"[a-z]+", w))
    if bad:
        raise ValueError(f"vocabulary words must be lowercase letters only, got {bad}")
    return tuple(sorted(words))


def caption(
    scene: Scene, *, size: bool = True, position: bool = True, background: bool = True
) -> str:
    """The caption of `scene`, e.g. "a small red circle on the left on a blue background".

    Switching parts off (or leaving them None in the scene) gives shorter captions; the
    colour and shape are always said when the scene has them.
    """
    words = []
    if size and scene.size:
        words.append(scene.size)
    if scene.colour:
        words.append(scene.colour)
    words.append(scene.shape)
    if position and scene.position:
        words.append(POSITION_PHRASES[scene.position])
    if background and scene.background:
        words.append(f"on {_article(scene.background)} {scene.background} background")
    return f"{_article(words[0])} {' '.join(words)}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def parse_caption(text: str) -> Scene:
    """Read a caption or prompt of the grammar back into the `Scene` it asks for.

    Case, surrounding whitespace, commas and a final full stop are forgiven; anything
    else outside the grammar is an error that quotes the text.
    """
    normalised = " ".join(text.lower().replace(",", " ").strip().rstrip(".").split())
    match = _CAPTION.fullmatch(normalised)
    if match is None:
        raise ValueError(
            f"{text!r} is not a toy-world caption; expected e.g. "
            f"'a small red circle on the left on a blue background' with shapes "
            f"{', '.join(ALL_SHAPES)} and colours {', '.join(COLOURS)}"
        )
    phrase = match["position"]
    return Scene(
        shape=match["shape"],
        colour=match["colour"],
        size=match["size"],
        position=_PHRASE_POSITIONS[phrase] if phrase else None,
        background=match["background"],
    )


def _choose(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _allowed(given: Iterable[str] | None, known: Collection[str], what: str) -> tuple[str, ...]:
    options = tuple(known) if given is None else tuple(given)
    unknown = [o for o in options if o not in known]
    if unknown or not options:
        raise ValueError(
            f"{what} must be a non-empty choice from {', '.join(known)}; got {options}"
        )
    return options


def sample_scene(
    rng: np.random.Generator,
    *,
    shapes: Iterable[str] | None = None,
    colours: Iterable[str] | None = None,
    backgrounds: Iterable[str] | None = None,
    sizes: Iterable[str] | None = None,
    positions: Iterable[str] | None = None,
    exclude: Collection[tuple[str, str]] = (),
) -> Scene:
    """A random complete scene, uniform over the allowed choices.

    Each keyword restricts one attribute (default: everything in the base world; novel
    shapes only when named in `shapes`). `exclude` holds (colour, shape) pairs never to
    draw, e.g. the held-out pairs of a `CaptionSplit`. The background is never the
    shape's colour.
    """
    shapes = _allowed(SHAPES if shapes is None else shapes, ALL_SHAPES, "shapes")
    colours = _allowed(colours, COLOURS, "colours")
    backgrounds = _allowed(backgrounds, COLOURS, "backgrounds")
    sizes = _allowed(sizes, SIZES, "sizes")
    positions = _allowed(positions, POSITIONS, "positions")
    pairs = [(c, s) for c in colours for s in shapes if (c, s) not in exclude]
    # A pair needs a background other than its colour.
    pairs = [(c, s) for c, s in pairs if any(b != c for b in backgrounds)]
    if not pairs:
        raise ValueError(
            f"no (colour, shape) pair is left to draw from colours {colours}, shapes {shapes}, "
            f"backgrounds {backgrounds} after excluding {sorted(exclude)}"
        )
    colour, shape = pairs[int(rng.integers(len(pairs)))]
    return Scene(
        shape=shape,
        colour=colour,
        size=_choose(rng, sizes),
        position=_choose(rng, positions),
        background=_choose(rng, [b for b in backgrounds if b != colour]),
    )
