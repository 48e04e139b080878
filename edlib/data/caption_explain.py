"""The caption an image trains with, and why: what `edlib caption` shows.

The caption of an image is put together by the scan (`captions.compose_caption`: its own
caption files, its folder's caption keys, the file name, the trigger) and varied per sample
by `captions.training_caption` (tag shuffling, keep_tokens, caption dropout).
`item_training_caption` is the one function the trainer calls for every sample
(`edlib.train.batches.batch_captions`); `explain_caption` takes the same settings from
`caption_settings` and draws its examples with the same `training_caption`, so what
`edlib caption` shows cannot drift from what training feeds the text encoder.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from edlib.data.captions import CAPTION_SUFFIXES, training_caption
from edlib.data.types import IMAGE_EXTENSIONS, QUARANTINE_DIR, DataRootError, ScanResult, Tag


@dataclass(frozen=True)
class CaptionRules:
    """The run config's caption keys, with the training defaults; a `TrainConfig` has the
    same attributes and can stand in for it."""

    shuffle_caption: bool = False
    keep_tokens: int = 1
    caption_dropout: float = 0.0


def caption_settings(scan: ScanResult, index: int, rules) -> tuple[bool, int, float]:
    """(shuffle tags, keep_tokens, caption dropout) for image `index`: its settings (its
    folder's, or its own .yaml sidecar's), falling back to the run's `rules` (a
    `CaptionRules` or the config)."""
    settings = scan.item_settings(index)
    dropout = rules.caption_dropout if settings.cond_dropout is None else settings.cond_dropout
    return bool(rules.shuffle_caption or settings.shuffle_tags), rules.keep_tokens, dropout


def item_training_caption(scan: ScanResult, index: int, rng: random.Random, rules) -> str:
    """The caption image `index` of `scan` trains with at one sample, drawn from `rng`."""
    shuffle, keep_tokens, dropout = caption_settings(scan, index, rules)
    return training_caption(scan.items[index].caption, rng, shuffle_tags=shuffle, keep_tokens=keep_tokens, dropout=dropout)


@dataclass
class CaptionExplanation:
    """One image's caption, its parts with the file each came from, and how training varies it."""

    path: str
    caption: str  # as trained before shuffling and dropout
    trigger: tuple[str, str] | None  # (text, source file)
    main_prompt: tuple[str, str]  # (text, where it came from)
    tags: list[tuple[str, float, str]]  # (text, weight, where it came from), in caption order
    shuffle: bool
    shuffle_source: str
    keep_tokens: int
    dropout: float
    dropout_source: str
    max_length: int | None
    weighted: bool  # the shuffled parts have different weights: a weighted shuffle
    excluded: bool  # its folder's exclude.txt keeps it out of training
    examples: list[str] = field(default_factory=list)  # drawn as training draws them, dropout left out
    encoder_text: str | None = None  # the caption as the text encoder gets it, when the method changes it

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "caption": self.caption,
            "trigger": None if self.trigger is None else {"text": self.trigger[0], "source": self.trigger[1]},
            "main_prompt": {"text": self.main_prompt[0], "source": self.main_prompt[1]},
            "tags": [{"text": t, "weight": w, "source": s} for t, w, s in self.tags],
            "shuffle": self.shuffle,
            "shuffle_source": self.shuffle_source,
            "keep_tokens": self.keep_tokens,
            "caption_dropout": self.dropout,
            "caption_dropout_source": self.dropout_source,
            "max_caption_length": self.max_length,
            "weighted_shuffle": self.weighted,
            "excluded": self.excluded,
            "examples": list(self.examples),
            "encoder_text": self.encoder_text,
        }


# Shuffled orders drawn per image when tags shuffle (`edlib caption --examples N`).
SHUFFLED_EXAMPLES = 3


def explain_caption(
    scan: ScanResult,
    index: int,
    rules=CaptionRules(),
    *,
    examples: int = SHUFFLED_EXAMPLES,
    prepare: Callable[[list[str]], list[str]] | None = None,
    rules_source: str = "default",
) -> CaptionExplanation:
    """Explain image `index` of `scan` under `rules` (`rules_source` names where they come
    from, e.g. the config file). With shuffling, `examples` captions are drawn with
    `item_training_caption` (caption dropout left out, so each shows an order). `prepare`
    is the training method's `prepare_captions` (textual inversion spells out placeholders)."""
    item = scan.items[index]
    folder = scan.folder(item.folder)
    settings = scan.item_settings(index)
    own = item.own
    own_keys = dict(own.settings) if own is not None and own.settings else {}
    files = _caption_files(scan, item.path)
    own_source = ", ".join(files) or "its caption files"
    caption = item.caption

    trigger = (caption.trigger, folder.sources.get("trigger", "trigger.txt")) if caption.trigger else None
    if own is not None and own.main_prompt and caption.main_prompt:
        main = (caption.main_prompt, own_source)
    elif folder.settings.main_prompt and caption.main_prompt == folder.settings.main_prompt:
        main = (caption.main_prompt, folder.sources.get("main_prompt", "local.yaml / global.yaml"))
    elif caption.main_prompt:
        main = (caption.main_prompt, "the file name, up to its first _")
    else:
        main = ("", "none: the caption starts with the folder's trigger")
    own_tags = {t.text for t in own.tags} if own is not None else set()
    folder_tags = {t.text for t in folder.settings.tags}
    tags = [
        (t.text, t.weight, own_source if t.text in own_tags else folder.sources.get("tags", "") if t.text in folder_tags
         else "the file name")
        for t in caption.tags
    ]

    shuffle, keep_tokens, dropout = caption_settings(scan, index, rules)
    if rules.shuffle_caption:
        shuffle_source = f"shuffle_caption in {rules_source}"
    elif shuffle:
        shuffle_source = own_source if own_keys.get("shuffle_tags") else folder.sources.get("shuffle_tags", "")
    else:
        shuffle_source = f"shuffle_caption is off in {rules_source}, and no shuffle_tags applies to this image"
    if settings.cond_dropout is None:
        dropout_source = f"caption_dropout in {rules_source}"
    else:
        dropout_source = own_source if "cond_dropout" in own_keys else folder.sources.get("cond_dropout", "")

    # Examples: the training draw with dropout left out, so each shows an order.
    drawn = [
        training_caption(caption, random.Random(k), shuffle_tags=True, keep_tokens=keep_tokens, dropout=0.0)
        for k in range(examples if shuffle else 0)
    ]
    text = caption.text()
    encoder_text = None
    if prepare is not None:
        prepared = prepare([text, *drawn])
        encoder_text = prepared[0] if prepared[0] != text else None
        drawn = prepared[1:]
    return CaptionExplanation(
        path=item.path,
        caption=text,
        trigger=trigger,
        main_prompt=main,
        tags=tags,
        shuffle=shuffle,
        shuffle_source=shuffle_source,
        keep_tokens=keep_tokens,
        dropout=dropout,
        dropout_source=dropout_source,
        max_length=caption.max_length,
        weighted=len({t.weight for t in [Tag(caption.main_prompt), *caption.tags][keep_tokens:] if t.text}) > 1,
        excluded=folder.settings.exclude,
        examples=drawn,
        encoder_text=encoder_text,
    )


def _caption_files(scan: ScanResult, image: str) -> list[str]:
    """The image's own caption files present in its folder (relative paths), in
    EveryDream2's merge order."""
    rel_folder, _, name = image.rpartition("/")
    stem = name.rpartition(".")[0]
    try:
        names = os.listdir(Path(scan.root) / rel_folder)
    except OSError:
        return []
    order = {suffix: i for i, suffix in enumerate(CAPTION_SUFFIXES)}
    found = [n for n in names if n.rpartition(".")[0] == stem and "." + n.rpartition(".")[2].lower() in order]
    found.sort(key=lambda n: order["." + n.rpartition(".")[2].lower()])
    return [f"{rel_folder}/{n}" if rel_folder else n for n in found]


def select_items(scan: ScanResult, paths: Sequence[str]) -> list[int]:
    """Indices of the images that `paths` name (an image, or a folder for every image in
    it and below), in scan order; no paths: every image. A path may be relative to the data
    root, or a path on disk inside it. Raises `DataRootError` saying why a path names none."""
    if not paths:
        return list(range(len(scan.items)))
    root = Path(scan.root)
    chosen: set[int] = set()
    for given in paths:
        rel = _relative(root, given)
        hits = [i for i, it in enumerate(scan.items) if it.path == rel or not rel or it.path.startswith(rel + "/")]
        if not hits:
            raise DataRootError(_why_not(scan, given, rel))
        chosen.update(hits)
    return sorted(chosen)


def _relative(root: Path, given: str) -> str:
    path = Path(given)
    if path.is_absolute() or path.exists():
        try:
            return Path(os.path.abspath(path)).relative_to(os.path.abspath(root)).as_posix().strip(".")
        except ValueError:
            pass  # not inside the data root: read it as relative to the root
    return Path(given).as_posix().strip("/").removeprefix("./").strip(".") if given not in ("", ".") else ""


def _why_not(scan: ScanResult, given: str, rel: str) -> str:
    root = Path(scan.root)
    skipped = dict(scan.skipped)
    if rel in skipped:
        return f"{given}: skipped by the scan ({skipped[rel]}), so it is not trained"
    if rel.split("/")[0] == QUARANTINE_DIR:
        return f"{given}: in the quarantine ({QUARANTINE_DIR}/), which training skips"
    target = root / rel
    if target.is_file() and target.suffix.lower() not in IMAGE_EXTENSIONS:
        return f"{given}: not an image edlib trains on (images: {', '.join(sorted(IMAGE_EXTENSIONS))})"
    if target.is_dir():
        return f"{given}: a folder with no usable images in it or below it"
    return f"{given}: no image or folder of that name in the data root {root}"


def format_explanation(e: CaptionExplanation) -> str:
    """One image's explanation for a terminal."""
    lines = [e.path + ("  (excluded by its folder's exclude.txt: not trained)" if e.excluded else "")]
    lines.append(f"  caption       {e.caption or '(empty)'}")
    if e.encoder_text is not None:
        lines.append(f"  text encoder  {e.encoder_text}  (the method spells out its placeholder tokens)")
    if e.trigger is not None:
        lines.append(f"  trigger       {e.trigger[0]}  ({e.trigger[1]})")
    lines.append(f"  main prompt   {e.main_prompt[0] or '-'}  ({e.main_prompt[1]})")
    by_source: dict[str, list[str]] = {}
    for text, weight, source in e.tags:
        by_source.setdefault(source, []).append(text if weight == 1 else f"{text} (weight {weight:g})")
    shown = "; ".join(f"{', '.join(tags)} ({source})" for source, tags in by_source.items())
    lines.append(f"  tags          {shown or '-'}")
    if e.shuffle:
        if e.keep_tokens == 0:
            kept = ("the trigger stays first; " if e.trigger else "") + "the main prompt is shuffled with the tags"
        else:
            kept = ("the trigger and " if e.trigger else "") + "the main prompt" + (
                f" and the next {e.keep_tokens - 1} tag(s)" if e.keep_tokens > 1 else ""
            ) + " stay first"
        how = ""
        if e.weighted:
            how = " (weighted: heavier tags tend to come first" + (
                f"; tags are added up to about {e.max_length} characters, max_caption_length)" if e.max_length else ")"
            )
        lines.append(f"  shuffling     on ({e.shuffle_source}); keep_tokens {e.keep_tokens}: {kept};")
        lines.append(f"                the rest is reshuffled for every sample{how}, e.g.:")
        lines += [f"                  {x}" for x in e.examples]
    else:
        lines.append(f"  shuffling     off: {e.shuffle_source}; every sample trains with the caption above")
    if e.dropout:
        lines.append(
            f"  dropout       {e.dropout:g} ({e.dropout_source}): about {100 * e.dropout:.3g}% of samples train "
            "with an empty caption instead"
        )
    else:
        lines.append(f"  dropout       0 ({e.dropout_source}): never an empty caption")
    return "\n".join(lines)
