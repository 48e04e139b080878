"""Captions: the caption of each image, and the caption used at a training step.

An image's caption is built as EveryDream2 builds it (`sidecars` reads the files):

1. Its own caption files, all that exist, merged: `img.yaml` over `img.yml` over
   `img.caption` over `img.txt` (the nearest main prompt wins, tags are pooled). A .txt
   caption is split at commas: "bob, blue hat" is main prompt "bob" and tag "blue hat".
2. Its folder's caption keys (`main_prompt`, `tags`, `caption` in local.yaml, and in the
   global.yaml files of the folder and above): their tags are added after the image's own,
   their main prompt is used when the image's files have none.
3. Still no main prompt: the file name without its extension, cut at the first `_` and read
   like a .txt caption (`rare photo_01.png` gives `rare photo`), so numbered copies share it.
4. The tags, one copy of each, sorted by weight (heaviest first); then the folder's trigger
   (edlib's `trigger.txt`) in front.

Text is UTF-8 (a BOM is tolerated, surrounding whitespace dropped); anything else is an
error naming the file, because silently mangled captions train the wrong words.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace

from edlib.data.sidecars import CaptionError, decode_text, ordered_tags, text_entry
from edlib.data.types import Caption, FolderSettings, ImageOwn, Tag

__all__ = ["CAPTION_SUFFIXES", "CaptionError", "compose_caption", "decode_text", "training_caption"]

# Caption files of an image, from the one that yields to the one that wins (EveryDream2's order).
CAPTION_SUFFIXES = (".txt", ".caption", ".yml", ".yaml")


def filename_caption(filename: str) -> Caption:
    """Caption from a file name: the name without extension, cut at the first `_`."""
    return stem_caption(os.path.splitext(os.path.basename(filename))[0])


def stem_caption(stem: str) -> Caption:
    """Caption from a file name without its extension: cut at the first `_`, then read like
    a .txt caption (the first comma-separated part is the main prompt)."""
    name = stem.split("_", 1)[0]
    if "," not in name:  # the common case, without building an Entry (scans feel every call)
        return Caption(main_prompt=name.strip())
    entry = text_entry(name)
    return Caption(main_prompt=entry.main_prompt or "", tags=entry.tags)


def compose_caption(own: ImageOwn | None, stem: str, folder: FolderSettings) -> Caption:
    """The caption of an image from its own files (`own`), its file name without extension
    (`stem`) and its folder's settings (caption keys and trigger); rules in the module
    docstring."""
    if own is None and not (folder.main_prompt or folder.tags or folder.max_caption_length or folder.trigger):
        caption = stem_caption(stem)  # the common case of a file-name caption, kept fast
        return caption if len(caption.tags) < 2 else replace(caption, tags=ordered_tags(caption.tags))
    main = own.main_prompt if own is not None and own.main_prompt else folder.main_prompt
    tags = (own.tags if own is not None else ()) + folder.tags
    if not main:
        from_name = stem_caption(stem)
        main, tags = from_name.main_prompt, from_name.tags + tags
    max_length = (own.max_caption_length if own is not None else None) or folder.max_caption_length
    caption = Caption(main_prompt=main, tags=ordered_tags(tags), max_length=max_length)
    return with_trigger(caption, folder.trigger)


def with_trigger(caption: Caption, trigger: str | None) -> Caption:
    """Put a folder's trigger in front of a caption.

    A caption that already starts with the trigger (as its own comma-separated part or
    parts) keeps it once, moved into the trigger slot so tag shuffling cannot move it.
    """
    if not trigger:
        return caption
    wanted = [p.strip() for p in trigger.split(",") if p.strip()]
    parts = [caption.main_prompt, *(t.text for t in caption.tags)]
    if wanted and parts[: len(wanted)] == wanted:
        return replace(caption, main_prompt="", tags=caption.tags[len(wanted) - 1 :], trigger=trigger)
    return replace(caption, trigger=trigger)


def training_caption(
    caption: Caption,
    rng: random.Random,
    *,
    shuffle_tags: bool,
    keep_tokens: int = 1,
    dropout: float = 0.0,
) -> str:
    """The caption fed to the text encoder at one training step.

    With probability `dropout` it is empty (conditional dropout, which teaches the model the
    unconditional prediction used by classifier-free guidance). Without `shuffle_tags` it is
    `caption.text()`. With it, the trigger stays first, then the first `keep_tokens` parts
    counting the main prompt as the first (1, the default, keeps the main prompt in front
    as EveryDream2 does; 0 shuffles it with the tags, kohya's keep_tokens 0), then the other
    tags shuffled: uniformly when their weights are equal, else a weighted shuffle
    (heavier tags tend to come first) that stops adding tags once the caption reaches the
    caption's `max_length` characters, as EveryDream2's does. The result depends only on
    `rng`.
    """
    if rng.random() < dropout:
        return ""
    if not shuffle_tags:
        return caption.text()
    front = [caption.trigger] if caption.trigger else []
    slots = [Tag(caption.main_prompt), *caption.tags]  # the main prompt's slot counts even when empty
    kept = [t.text for t in slots[:keep_tokens] if t.text]
    rest = [t for t in slots[keep_tokens:] if t.text]
    if len({t.weight for t in rest}) > 1:
        shuffled = _weighted_shuffle(rest, rng)
        if caption.max_length:
            shuffled = _within(shuffled, caption.max_length - len(", ".join(front + kept)))
    else:
        shuffled = [t.text for t in rest]
        rng.shuffle(shuffled)
    return ", ".join(front + kept + shuffled)


def _weighted_shuffle(tags: list[Tag], rng: random.Random) -> list[str]:
    """Order tags as if drawn one by one without replacement, each draw proportional to
    weight (EveryDream2's draw). Sorting by u ** (1 / weight) with u uniform gives exactly
    that order (Efraimidis and Spirakis, 2006)."""
    keyed = [(rng.random() ** (1.0 / tag.weight), tag.text) for tag in tags]
    keyed.sort(key=lambda pair: pair[0], reverse=True)
    return [text for _, text in keyed]


def _within(tags: list[str], budget: int) -> list[str]:
    """The leading tags, added one by one while the tag text so far is shorter than
    `budget` characters (EveryDream2's max_caption_length rule: whole tags only)."""
    out: list[str] = []
    for tag in tags:
        if len(", ".join(out)) >= budget:
            break
        out.append(tag)
    return out
