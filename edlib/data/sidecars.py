"""EveryDream2's caption documents: what one caption or yaml file says, and how several merge.

A file of a data root that describes images is read into an `Entry`:

- `img.txt` / `img.caption`: the text split at commas, each part stripped: the first part
  is the main prompt, the others are tags ("bob,  blue hat ,blue hat" gives main prompt
  "bob" and the tag "blue hat" once). An empty first part means "no main prompt".
- `img.yaml` / `img.yml`, and the caption keys of `local.yaml` / `global.yaml`:
  `main_prompt` (text, or a list whose first entry counts), `tags` (each text or
  `{tag: ..., weight: ...}`), `caption` (a text read like a .txt file, or a mapping read
  like this one; it wins over `main_prompt` and its tags come first), `max_caption_length`,
  and settings (`multiply`, `flip_p`, ... : for an image sidecar they apply to that image).

Entries merge as EveryDream2's `ImageConfig.merge` does: the nearer one's main prompt
wins, tags are the union with the nearer one's first, a setting set nearer wins. The
nearer-to-farther order for an image is: its `.yaml`, `.yml`, `.caption`, `.txt`, then its
folder's local.yaml and the files beside it, then the global.yaml files up the tree.
The final tag list keeps one copy of each tag text (with its highest weight) and is sorted
by weight, heaviest first (a stable sort: equal weights keep their order), as EveryDream2
orders them before training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import yaml

from edlib.data import safe_yaml
from edlib.data.small_files import quote
from edlib.data.types import DataRootError, Tag

# Keys EveryDream2 reads from its yaml files only for features edlib does not have: `rating`
# drives its `rated_dataset` training option, `image` names the image in a JSON data root.
UNUSED_KEYS = frozenset({"rating", "image"})
CAPTION_KEYS = ("main_prompt", "tags", "caption", "max_caption_length")
_YAML_SUFFIXES = (".yaml", ".yml")


class CaptionError(DataRootError):
    """A caption file that cannot be used; the message names the file."""


def decode_text(data: bytes, name: str) -> str:
    """UTF-8 text of a small user file (caption or setting), BOM and outer whitespace removed.
    Anything else is an error naming the file: silently mangled captions train wrong words."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        bad = data[exc.start : exc.start + 4]
        raise CaptionError(
            f"{name}: not valid UTF-8 (byte {exc.start}: {bad!r}); save the file as UTF-8"
        ) from exc
    return text.strip()


@dataclass(frozen=True)
class Entry:
    """What one file (or several, merged) says about the images it applies to.

    `settings` holds the raw values of setting keys (parsed and checked by whoever applies
    them, so a bad value there is reported where it is used); `keys` the keys the file
    held, for the scan's summary; `unknown` keys that mean nothing to edlib or EveryDream2."""

    main_prompts: tuple[str, ...] = ()
    tags: tuple[Tag, ...] = ()
    max_caption_length: int | None = None
    settings: tuple[tuple[str, object], ...] = ()
    keys: tuple[str, ...] = ()
    unknown: tuple[str, ...] = ()

    @property
    def main_prompt(self) -> str | None:
        return self.main_prompts[0] if self.main_prompts else None

    @property
    def empty(self) -> bool:
        return not (self.main_prompts or self.tags or self.settings or self.max_caption_length or self.keys)

    def over(self, base: Entry) -> Entry:
        """This entry merged over `base`: its main prompt, tags and settings come first."""
        if base.empty:
            return self
        settings = dict(base.settings)
        settings.update(self.settings)
        return Entry(
            main_prompts=_unique(self.main_prompts + base.main_prompts),
            tags=self.tags + base.tags,
            max_caption_length=self.max_caption_length or base.max_caption_length,
            settings=tuple(settings.items()),
            keys=_unique(self.keys + base.keys),
            unknown=_unique(self.unknown + base.unknown),
        )

    def to_json(self) -> list:
        """A JSON-able form for the scan cache (`from_json` reverses it)."""
        return [
            list(self.main_prompts),
            [[t.text, t.weight] for t in self.tags],
            self.max_caption_length,
            [[k, v] for k, v in self.settings],
            list(self.keys),
            list(self.unknown),
        ]

    @classmethod
    def from_json(cls, doc: list) -> Entry:
        mains, tags, max_length, settings, keys, unknown = doc
        return cls(
            tuple(mains),
            tuple(Tag(t, w) for t, w in tags),
            max_length,
            tuple((k, v) for k, v in settings),
            tuple(keys),
            tuple(unknown),
        )


def _unique(values: tuple) -> tuple:
    return tuple(dict.fromkeys(values))


def text_entry(text: str) -> Entry:
    """A caption text (a .txt/.caption file, a file name, a `caption:` value) read as
    EveryDream2 reads it: comma-separated, the first part the main prompt."""
    parts = [p.strip() for p in text.split(",")]
    main = (parts[0],) if parts[0] else ()
    return Entry(main_prompts=main, tags=tuple(Tag(p) for p in parts[1:] if p))


def parse_caption_file(data: bytes, name: str, setting_keys: tuple[str, ...]) -> Entry:
    """Parse a caption file's bytes; `name` (its path) decides the format and names errors.
    `setting_keys` are the settings a yaml file may hold besides the caption keys."""
    text = decode_text(data, name)
    if not name.lower().endswith(_YAML_SUFFIXES):
        return text_entry(text)
    return yaml_entry(load_yaml(text, name), name, setting_keys)


def load_yaml(text: str, name: str) -> dict:
    """A yaml file's mapping; an empty file is an empty mapping."""
    try:
        doc = safe_yaml.load(text) if text else {}
    except yaml.YAMLError as exc:
        raise CaptionError(f"{name}: not valid YAML: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise CaptionError(f"{name}: expected a mapping (main_prompt:, tags:, ...), found {quote(text)}")
    return doc


def yaml_entry(doc: dict, name: str, setting_keys: tuple[str, ...]) -> Entry:
    """An entry from a yaml mapping (an image sidecar, local.yaml or global.yaml)."""
    settings, unknown = [], []
    for key, value in doc.items():
        if key in setting_keys:
            settings.append((key, value))
        elif key not in CAPTION_KEYS and key not in UNUSED_KEYS:
            unknown.append(str(key))
    entry = Entry(
        main_prompts=_main_prompts(doc.get("main_prompt"), name),
        tags=_tags(doc.get("tags"), name),
        max_caption_length=_max_length(doc.get("max_caption_length"), name),
        settings=tuple(settings),
        keys=tuple(str(k) for k in doc),
        unknown=tuple(unknown),
    )
    caption = doc.get("caption")
    if caption is None or caption == "":
        return entry
    if isinstance(caption, str):
        return text_entry(caption).over(entry)
    if isinstance(caption, dict):
        return yaml_entry(caption, f"{name} (caption)", setting_keys).over(entry)
    raise CaptionError(f"{name}: caption must be text or a mapping, found {quote(caption)}")


def _main_prompts(value, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in values):
        raise CaptionError(f"{name}: main_prompt must be text (put numbers in quotes), found {quote(value)}")
    return _unique(tuple(v.strip() for v in values if v.strip()))


def _tags(value, name: str) -> tuple[Tag, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise CaptionError(f"{name}: tags must be a list (one '- tag' per line), found {quote(value)}")
    tags = (_tag(raw, name) for raw in value)
    return tuple(t for t in tags if t.text)


def _tag(raw, name: str) -> Tag:
    if isinstance(raw, str):
        return Tag(raw.strip())
    if isinstance(raw, dict) and isinstance(raw.get("tag"), str):
        weight = raw.get("weight", 1.0)
        if weight is None:
            weight = 1.0
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise CaptionError(f"{name}: tag {quote(raw['tag'])} has weight {quote(weight)}; weights must be numbers > 0")
        return Tag(raw["tag"].strip(), float(weight))
    raise CaptionError(f"{name}: each tag must be text or {{tag: ..., weight: ...}}, found {quote(raw)}")


def _max_length(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CaptionError(f"{name}: max_caption_length must be a whole number of characters > 0, found {quote(value)}")
    return value


def ordered_tags(tags: tuple[Tag, ...]) -> tuple[Tag, ...]:
    """One copy of each tag text, with its highest weight, heaviest first (stable)."""
    if len(tags) < 2:
        return tags
    best: dict[str, float] = {}
    for tag in tags:
        best[tag.text] = max(best.get(tag.text, tag.weight), tag.weight)
    unique = [Tag(text, weight) for text, weight in best.items()]
    unique.sort(key=lambda t: t.weight, reverse=True)
    return tuple(unique)
