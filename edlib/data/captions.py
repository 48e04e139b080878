"""Captions: reading them from sidecar files or file names, and the caption used at a step.

Where a caption comes from, for `a/b/img.png` (first that exists):

1. `a/b/img.txt`, then `a/b/img.caption`: the whole text is the main prompt;
2. `a/b/img.yaml` (or `img.yml`): an EveryDream2 sidecar with `main_prompt` and `tags`, each
   tag a string or `{tag: ..., weight: ...}`;
3. otherwise the file name without its extension, cut at the first `_`
   (`rare photo_01.png` gives `rare photo`), so numbered copies share one caption.

This is DESIGN.md's order. EveryDream2 merges a `.txt` and a `.yaml` of the same image; we
use the first one only and the scan warns when both exist, so what trains is never a
surprise. Text is UTF-8 (a BOM is tolerated, surrounding whitespace dropped); anything else
is an error naming the file, because silently mangled captions train the wrong words.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import replace

import yaml

from edlib.data import safe_yaml
from edlib.data.small_files import quote
from edlib.data.types import Caption, DataRootError, Tag

CAPTION_SUFFIXES = (".txt", ".caption", ".yaml", ".yml")
_YAML_SUFFIXES = (".yaml", ".yml")


class CaptionError(DataRootError):
    """A caption file that cannot be used; the message names the file."""


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text of a small user file (caption or setting), BOM and outer whitespace removed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        raise CaptionError(
            f"{name}: not valid UTF-8 (byte {exc.start}: {bad!r}); save the file as UTF-8"
        ) from exc
    return text.strip()


def filename_caption(filename: str) -> Caption:
    """Caption from a file name: the name without extension, cut at the first `_`."""
    return stem_caption(os.path.splitext(os.path.basename(filename))[0])


def stem_caption(stem: str) -> Caption:
    """Caption from a file name without its extension: cut at the first `_`."""
    return Caption(main_prompt=stem.split("_", 1)[0].strip())


def parse_caption_file(data: bytes, name: str) -> tuple[Caption, tuple[str, ...]]:
    """Parse a caption file's bytes; `name` (its path) decides the format and names errors.

    Returns the caption and the keys of a `.yaml` sidecar that are not caption keys
    (EveryDream2 allows per-image settings there; the scan reports them).
    """
    text = decode_text(data, name)
    if not name.lower().endswith(_YAML_SUFFIXES):
        return Caption(main_prompt=text), ()
    return _parse_yaml_caption(text, name)


def _parse_yaml_caption(text: str, name: str) -> tuple[Caption, tuple[str, ...]]:
    try:
        doc = safe_yaml.load(text) if text else {}
    except yaml.YAMLError as exc:
        raise CaptionError(f"{name}: not valid YAML: {exc}") from exc
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise CaptionError(f"{name}: expected a mapping with main_prompt and tags, found {quote(text)}")
    main = doc.get("main_prompt", "")
    if isinstance(main, list) and all(isinstance(m, str) for m in main):
        main = main[0] if main else ""  # EveryDream2 accepts a list and uses its first entry
    if not isinstance(main, str):
        raise CaptionError(f"{name}: main_prompt must be text, found {quote(main)}")
    raw_tags = doc.get("tags") or []
    if not isinstance(raw_tags, list):
        raise CaptionError(f"{name}: tags must be a list, found {quote(raw_tags)}")
    tags = tuple(t for t in (_parse_tag(raw, name) for raw in raw_tags) if t.text)
    extra = tuple(sorted(str(k) for k in doc if k not in ("main_prompt", "tags")))
    return Caption(main_prompt=main.strip(), tags=tags), extra


def _parse_tag(raw, name: str) -> Tag:
    if isinstance(raw, str):
        return Tag(raw.strip())
    if isinstance(raw, dict) and isinstance(raw.get("tag"), str):
        weight = raw.get("weight", 1.0)
        if weight is None:
            weight = 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise CaptionError(
                f"{name}: tag {quote(raw['tag'])} has weight {quote(weight)}; weights must be numbers > 0"
            )
        return Tag(raw["tag"].strip(), float(weight))
    raise CaptionError(f"{name}: each tag must be text or {{tag: ..., weight: ...}}, found {quote(raw)}")


def with_trigger(caption: Caption, trigger: str | None) -> Caption:
    """Put a folder's trigger in front of a caption.

    A caption that already starts with the trigger as its own comma-separated part keeps it
    once, moved into the trigger slot so tag shuffling cannot move it.
    """
    if not trigger:
        return caption
    main = caption.main_prompt
    if main == trigger:
        main = ""
    elif main.startswith(trigger) and main[len(trigger) :].lstrip().startswith(","):
        main = main[len(trigger) :].lstrip()[1:].strip()
    return replace(caption, main_prompt=main, trigger=trigger)


def training_caption(
    caption: Caption,
    rng: random.Random,
    *,
    shuffle_tags: bool,
    keep_tokens: int = 0,
    dropout: float = 0.0,
) -> str:
    """The caption fed to the text encoder at one training step.

    With probability `dropout` it is empty (conditional dropout, which teaches the model the
    unconditional prediction used by classifier-free guidance). Otherwise the trigger and
    main prompt come first. With `shuffle_tags`, a `.yaml` caption's tags are shuffled (a
    weighted shuffle when weights differ: heavier tags tend to come first, as in
    EveryDream2); a plain caption is split at commas and its parts after the first
    `keep_tokens` are shuffled (kohya's keep_tokens). The result depends only on `rng`.
    """
    if rng.random() < dropout:
        return ""
    if not shuffle_tags:
        return caption.text()
    front = [caption.trigger] if caption.trigger else []
    if caption.tags:
        if caption.main_prompt:
            front.append(caption.main_prompt)
        return ", ".join(front + _weighted_shuffle(caption.tags, rng))
    parts = [p.strip() for p in caption.main_prompt.split(",") if p.strip()]
    kept, rest = parts[:keep_tokens], parts[keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(front + kept + rest)


def _weighted_shuffle(tags: tuple[Tag, ...], rng: random.Random) -> list[str]:
    """Order tags as if drawn one by one without replacement, each draw proportional to
    weight. Sorting by u ** (1 / weight) with u uniform gives exactly that order
    (Efraimidis and Spirakis, 2006); equal weights give a uniform shuffle."""
    keyed = [(rng.random() ** (1.0 / tag.weight), tag.text) for tag in tags]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [text for _, text in keyed]
