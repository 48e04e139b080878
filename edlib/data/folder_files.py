"""Folder files: the per-folder settings of a data root and where each value comes from.

Files a folder may hold (EveryDream2 names):

    multiply.txt      times each image is used per epoch, a real number > 0 (exact decimal)
    loss_scale.txt    factor on the loss of these images, finite; negative warns loudly
    flip_p.txt        probability of a horizontal flip, 0..1
    cond_dropout.txt  probability of training with an empty caption, 0..1
    shuffle_tags.txt  present = shuffle caption tags; or true/false/yes/no/on/off/1/0
    batch_id.txt      images with the same batch id are batched together
    trigger.txt       a word or phrase put in front of every caption of the folder (empty: none)
    exclude.txt       present = the folder's images are not trained (multiplier 0); its text is a note
    local.yaml        any of the keys above (multiply, loss_scale, ..., trigger): this folder
    global.yaml       the same keys, for this folder and every folder below it

local.yaml and global.yaml may also hold EveryDream2's caption keys (`main_prompt`, `tags`,
`caption`, `max_caption_length`): folder captions that complete the captions of the images
(see `captions.compose_caption`). `.yml` spellings of local/global are accepted.

Precedence, lowest first (EveryDream2's order):

    defaults < global.yaml of the ancestors (nearer wins) < global.yaml here
             < multiply.txt, flip_p.txt, cond_dropout.txt here < local.yaml here
             < loss_scale.txt, batch_id.txt, trigger.txt here
             < an image's own .yaml sidecar (for that image; see `sidecars`)

so local.yaml beats multiply.txt / flip_p.txt / cond_dropout.txt, and loss_scale.txt /
batch_id.txt beat local.yaml; the scan warns when both set the same key to different values.
Two keys combine instead: `tags` from every level are pooled (nearer ones first), and
`shuffle_tags` is on when any level turns it on. Nothing but global.yaml ever cascades: a
multiply.txt applies to the images directly in its folder, not to subfolders (the
EveryDream rule users rely on for preservation sets).

`exclude.txt` (edlib's, written by `edlib balance --apply` for a weight of 0, or by hand) wins
over every multiplier: the folder's images stay in the scan but get 0 samples per epoch, also
those whose own .yaml sets `multiply`. Like multiply.txt it applies to its folder only. It is
a file of its own rather than `multiply.txt` = 0 because 0 there is an error (a typo must not
silently drop a folder), and because deleting it undoes it while the multiplier stays as it was.

Bad values are errors naming the file and the text found; the folder then keeps the
value it would have had without that file, so one typo shows every other problem too.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, fields
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from pathlib import Path

from edlib.data.sidecars import (
    UNUSED_KEYS,
    CaptionError,
    decode_text,
    load_yaml,
    yaml_entry,
)
from edlib.data.small_files import SETTING_FILE_LIMIT, TEXT_FILE_LIMIT, quote, read_small
from edlib.data.types import DataRootError, FolderSettings

# Largest multiplier accepted: beyond it an epoch would not fit in memory, so it is a typo.
MAX_MULTIPLY = 1_000_000
# Largest loss_scale accepted either way: at 1e308 every loss is inf, so it is a typo too.
MAX_LOSS_SCALE = 1000
# A number as people write it; Python's Decimal also takes `0_5` (= 5) and non-ASCII digits.
_PLAIN_NUMBER = re.compile(r"[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?")
_NOT_FINITE = frozenset({"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"})

SETTING_FILES = {
    "multiply.txt": "multiply",
    "loss_scale.txt": "loss_scale",
    "flip_p.txt": "flip_p",
    "cond_dropout.txt": "cond_dropout",
    "shuffle_tags.txt": "shuffle_tags",
    "batch_id.txt": "batch_id",
    "trigger.txt": "trigger",
}
LOCAL_YAML = ("local.yaml", "local.yml")
GLOBAL_YAML = ("global.yaml", "global.yml")
EXCLUDE_FILE = "exclude.txt"
FOLDER_FILES = frozenset(SETTING_FILES) | frozenset(LOCAL_YAML) | frozenset(GLOBAL_YAML) | {EXCLUDE_FILE}
# Folder caption keys (from local/global yaml); every other field is a setting, except
# `exclude`, which only exclude.txt sets (no yaml key: one explicit file to find and delete).
CAPTION_FIELDS = ("main_prompt", "tags", "max_caption_length")
SETTING_KEYS = tuple(f.name for f in fields(FolderSettings) if f.name not in (*CAPTION_FIELDS, "exclude"))
ALL_KEYS = SETTING_KEYS + CAPTION_FIELDS
# .txt files that local.yaml overrides in the same folder; the others override local.yaml.
_BELOW_LOCAL = frozenset({"multiply", "flip_p", "cond_dropout", "shuffle_tags"})

_TRUE = frozenset({"", "true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class SettingError(DataRootError):
    """A folder file with a bad value; the message names the file and the text found."""


@dataclass
class Layer:
    """Setting values with the file each came from (paths relative to the data root), and
    the keys whose file held a bad value (the trainer keeps its previous value for those)."""

    values: dict[str, object] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    failed: set[str] = field(default_factory=set)

    def over(self, base: Layer) -> Layer:
        """This layer on top of `base`: its values win (tags are pooled, this layer's first;
        shuffle_tags stays on if either turns it on), and a good value here replaces a bad
        one below."""
        values = {**base.values, **self.values}
        sources = {**base.sources, **self.sources}
        if "tags" in self.values and "tags" in base.values:
            values["tags"] = self.values["tags"] + base.values["tags"]
            sources["tags"] = f"{self.sources['tags']} + {base.sources['tags']}"
        if base.values.get("shuffle_tags") and self.values.get("shuffle_tags") is False:
            values["shuffle_tags"], sources["shuffle_tags"] = True, base.sources["shuffle_tags"]
        return Layer(values, sources, (base.failed - self.values.keys()) | self.failed)


@dataclass
class FolderRead:
    """The result of reading one folder's files."""

    settings: FolderSettings
    sources: dict[str, str]
    inherited: Layer  # what subfolders inherit: the global.yaml layers down to here
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)  # keys whose final value a bad file would have set
    files: list[str] = field(default_factory=list)  # folder files present (relative paths)
    yaml_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)  # local/global yaml -> its keys
    exclude_note: str | None = None  # the first line of exclude.txt, when the folder is excluded


def parse_setting(key: str, value: object, source: str) -> object:
    """Parse one setting from a file's text or a YAML value; raises `SettingError`."""
    if key in ("batch_id", "trigger"):
        if value is None and key == "trigger":
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SettingError(f"{source}: {key} must be text, found {quote(value)}")
        text = str(value).strip()
        if key == "batch_id" and not text:
            raise SettingError(f"{source}: batch_id is empty")
        return text or None
    if key == "shuffle_tags":
        return _parse_bool(value, source)
    number = _parse_decimal(value, source, key)
    if key == "multiply":
        if number <= 0:
            raise SettingError(f"{source}: multiply must be > 0, found {_shown(value)}")
        if number > MAX_MULTIPLY:
            raise SettingError(f"{source}: multiply {_shown(value)} is larger than {MAX_MULTIPLY:,}")
        return Fraction(number)
    as_float = float(number)
    if key == "loss_scale" and abs(as_float) > MAX_LOSS_SCALE:
        raise SettingError(
            f"{source}: loss_scale {_shown(value)} is beyond ±{MAX_LOSS_SCALE:,}; it multiplies the loss, "
            "so such a value makes every loss overflow (typical values: 0.5 to 2)"
        )
    if key in ("flip_p", "cond_dropout") and not 0.0 <= as_float <= 1.0:
        raise SettingError(f"{source}: {key} is a probability between 0 and 1, found {_shown(value)}")
    return as_float


def format_value(value: object) -> str:
    """A setting value as users write it: 2.5 rather than Fraction(5, 2)."""
    if isinstance(value, Fraction):
        return str(value.numerator) if value.denominator == 1 else repr(float(value))
    if isinstance(value, tuple):  # tags
        return "[" + ", ".join(t.text if t.weight == 1 else f"{t.text} (weight {t.weight:g})" for t in value) + "]"
    return str(value)


def format_multiplier(multiply: Fraction, excluded: bool) -> str:
    """A folder's multiplier in a table: "excluded" when its exclude.txt excludes it (its
    multiplier is 0 whatever multiply.txt says), else as written (`format_value`)."""
    return "excluded" if excluded else format_value(multiply)


def _parse_decimal(value: object, source: str, key: str) -> Decimal:
    """An exact, finite decimal: `Fraction(Decimal(text))` keeps 0.1 exactly 1/10."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise SettingError(f"{source}: {key} must be a number, found {quote(value)}")
    text = (value if isinstance(value, str) else repr(value)).strip()
    if not _PLAIN_NUMBER.fullmatch(text) and text.lower() not in _NOT_FINITE:
        hint = " (use a dot as decimal separator)" if "," in text else ""
        hint = hint or (" (write the number without _ or spaces)" if "_" in text else "")
        raise SettingError(f"{source}: {key} must be a number, found {_shown(value)}{hint}")
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise SettingError(f"{source}: {key} must be a number, found {_shown(value)}") from None
    if not number.is_finite() or not math.isfinite(float(number)):
        raise SettingError(f"{source}: {key} must be a finite number, found {_shown(value)}")
    return number


def _parse_bool(value: object, source: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if value is not None else ""
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SettingError(f"{source}: shuffle_tags must be empty, true or false, found {_shown(value)}")


def _shown(value: object) -> str:
    return quote(value) if not isinstance(value, str) or value.strip() else f"{value!r} (empty)"


def read_folder(folder: Path, rel: str, names: set[str], inherited: Layer) -> FolderRead:
    """Read the folder files among `names` in `folder` (relative path `rel`)."""
    out = FolderRead(FolderSettings(), {}, inherited)
    global_layer = _read_yaml_layer(folder, rel, names, GLOBAL_YAML, out)
    local_layer = _read_yaml_layer(folder, rel, names, LOCAL_YAML, out)
    below, above = Layer(), Layer()
    for name in sorted(names & SETTING_FILES.keys()):
        key, source = SETTING_FILES[name], _join(rel, name)
        layer = below if key in _BELOW_LOCAL else above
        out.files.append(source)
        try:
            value = parse_setting(key, _read_text(folder / name, source), source)
        except DataRootError as exc:
            out.errors.append(str(exc))
            layer.failed.add(key)
            continue
        if key == "trigger" and value is None:
            out.warnings.append(f"{source} is empty: no trigger for this folder")
            continue
        if key != "shuffle_tags" and key in local_layer.values and local_layer.values[key] != value:
            local = local_layer.sources[key]
            out.warnings.append(
                f"{key} is set in both {local} ({format_value(local_layer.values[key])}) "
                f"and {source} ({format_value(value)}); {local if layer is below else source} wins "
                "(EveryDream2's order)"
            )
        layer.values[key] = value
        layer.sources[key] = source
    if EXCLUDE_FILE in names:
        _read_exclude(folder, rel, above, out)

    out.inherited = global_layer.over(inherited)
    merged = above.over(local_layer.over(below.over(out.inherited)))
    if merged.values.get("exclude"):  # the effective multiplier: every count downstream follows it
        # Only the value: sources["multiply"] stays the file that sets multiply (a local.yaml
        # there still wins over a multiply.txt once exclude.txt is gone); `reported_sources`
        # names exclude.txt as the reason for the 0.
        merged.values["multiply"] = Fraction(0)
    out.settings = FolderSettings(**merged.values)
    out.sources = merged.sources
    out.failed = merged.failed
    return out


def _read_exclude(folder: Path, rel: str, layer: Layer, out: FolderRead) -> None:
    """exclude.txt: its presence excludes the folder; a text that reads as "no" is an error
    rather than a silent exclusion the writer did not mean."""
    source = _join(rel, EXCLUDE_FILE)
    out.files.append(source)
    try:
        text = _read_text(folder / EXCLUDE_FILE, source).strip()
        if text.lower() in _FALSE:
            raise SettingError(
                f"{source}: this file excludes its folder from training whatever it holds, and it says "
                f"{quote(text)}; delete it to train the folder (its text is only a note)"
            )
    except DataRootError as exc:
        out.errors.append(str(exc))
        layer.failed.update(("exclude", "multiply"))  # a re-read keeps both as they were
        return
    layer.values["exclude"], layer.sources["exclude"] = True, source
    out.exclude_note = text.splitlines()[0].strip() if text else None


def _read_yaml_layer(folder: Path, rel: str, names: set[str], spellings: tuple[str, ...], out: FolderRead) -> Layer:
    present = [n for n in spellings if n in names]
    if not present:
        return Layer()
    if len(present) > 1:
        out.warnings.append(f"both {_join(rel, present[0])} and {_join(rel, present[1])} exist; using {present[0]}")
    source = _join(rel, present[0])
    out.files.append(source)
    try:
        doc = load_yaml(_read_text(folder / present[0], source, TEXT_FILE_LIMIT), source)
    except DataRootError as exc:
        out.errors.append(str(exc))
        # A file that cannot be read as a whole may have set any key: all count as failed.
        return Layer(failed=set(ALL_KEYS))
    out.yaml_keys[source] = tuple(str(k) for k in doc)
    layer = Layer()
    try:
        entry = yaml_entry(doc, source, SETTING_KEYS)
    except CaptionError as exc:
        out.errors.append(str(exc))
        layer.failed.update(CAPTION_FIELDS)
        entry = yaml_entry({k: v for k, v in doc.items() if k in SETTING_KEYS}, source, SETTING_KEYS)
    for key in entry.unknown:
        out.warnings.append(f"{source}: unknown setting {quote(key)} ignored (known: {', '.join(_KNOWN_YAML_KEYS)})")
    for key in sorted(UNUSED_KEYS & doc.keys()):
        out.warnings.append(f"{source}: {key!r} is not used by edlib ({_UNUSED_WHY[key]})")
    for key, value in (("main_prompt", entry.main_prompt), ("tags", entry.tags or None)):
        if value is not None and key not in layer.failed:
            layer.values[key], layer.sources[key] = value, source
    if entry.max_caption_length is not None:
        layer.values["max_caption_length"], layer.sources["max_caption_length"] = entry.max_caption_length, source
    for key, value in entry.settings:
        try:
            layer.values[key] = parse_setting(key, value, f"{source} ({key})")
        except SettingError as exc:
            out.errors.append(str(exc))
            layer.failed.add(key)
            continue
        layer.sources[key] = source
    return layer


_KNOWN_YAML_KEYS = (*SETTING_KEYS, "main_prompt", "tags", "caption", "max_caption_length")
_UNUSED_WHY = {
    "rating": "EveryDream2 uses it only with its rated_dataset training option",
    "image": "EveryDream2 reads it only in a JSON data root",
}


def _read_text(path: Path, source: str, limit: int = SETTING_FILE_LIMIT) -> str:
    try:
        data = read_small(path, source, limit)
    except OSError as exc:
        raise SettingError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    return decode_text(data, source)


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


# ---- near-miss names: the most common mistake is a misnamed multiply.txt -----------------

_EXTENSIONS = (".txt", ".text", ".yaml", ".yml", ".md", ".rtf", ".doc", ".docx")
_CANONICAL = {
    "multiply": "multiply.txt",
    "multiplier": "multiply.txt",
    "multiplyer": "multiply.txt",
    "multiple": "multiply.txt",
    "lossscale": "loss_scale.txt",
    "flipp": "flip_p.txt",
    "conddropout": "cond_dropout.txt",
    "shuffletags": "shuffle_tags.txt",
    "batchid": "batch_id.txt",
    "trigger": "trigger.txt",
    "triggers": "trigger.txt",
    "exclude": "exclude.txt",
    "excluded": "exclude.txt",
    "local": "local.yaml",
    "global": "global.yaml",
}


def near_miss(name: str) -> str | None:
    """The folder file `name` was probably meant to be, or None.

    `multiply.txt.txt` (Windows hides the second extension), `Multiply.TXT`,
    `multiply.text`, `multiplier.txt`, `loss-scale.txt`, `mulitply.txt` all map to the
    real name. Exact names never match.
    """
    if name in FOLDER_FILES:
        return None
    stem = name.strip().lower()
    had_extension = False
    while stem.endswith(_EXTENSIONS):
        stem = os.path.splitext(stem)[0].strip()
        had_extension = True
    key = "".join(ch for ch in stem if ch.isalnum())
    if key in _CANONICAL:
        if key in ("local", "global") and not had_extension:
            return None  # a bare "local" or "global" is too common a word to warn about
        return _CANONICAL[key]
    for known, canonical in _CANONICAL.items():
        if len(known) >= 7 and had_extension and _edit_distance_at_most_one(key, known):
            return canonical
    return None


def _edit_distance_at_most_one(a: str, b: str) -> bool:
    """True when one insertion, deletion, substitution or adjacent swap turns a into b."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return a == b
    if len(a) == len(b):
        diff = [i for i in range(len(a)) if a[i] != b[i]]
        if len(diff) == 1:
            return True
        return len(diff) == 2 and diff[1] == diff[0] + 1 and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]]
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    i = 0
    while i < len(short) and short[i] == long_[i]:
        i += 1
    return short[i:] == long_[i + 1 :]


def reported_sources(settings: FolderSettings, sources: dict[str, str]) -> dict[str, str]:
    """`sources` as messages name them: an excluded folder's multiplier (0) comes from its
    exclude.txt, whatever file sets its multiply."""
    if settings.exclude and "exclude" in sources:
        return {**sources, "multiply": sources["exclude"]}
    return sources


def setting_label(folder: str, key: str, source: str) -> str:
    """'a/multiply.txt' for a folder's own file, 'multiply from a/global.yaml' otherwise."""
    if os.path.dirname(source) == folder and not source.endswith((".yaml", ".yml")):
        return source
    return f"{key} from {source}"
