"""An image's own caption files during a scan: read through the scan cache, merged as
EveryDream2 merges them (`sidecars`), per-image settings parsed and checked.

Problems are collected, never raised: a file that cannot be used is an error naming it
(the image then gets the caption it would have without that file), a bad per-image
setting is an error naming the file and key (the image keeps its folder's value).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from edlib.data.ed2_summary import Ed2Use
from edlib.data.folder_files import SettingError, parse_setting
from edlib.data.scan_cache import ScanCache
from edlib.data.sidecars import UNUSED_KEYS, Entry, parse_caption_file
from edlib.data.small_files import TEXT_FILE_LIMIT, read_small
from edlib.data.types import IMAGE_SETTING_KEYS, DataRootError, ImageOwn

_YAML = (".yaml", ".yml")


@dataclass
class FolderNotes:
    """What one folder's caption files gave the scan to report."""

    errors: list[str] = field(default_factory=list)
    empty: list[str] = field(default_factory=list)  # empty caption files (relative paths)
    unknown: dict[str, list[str]] = field(default_factory=dict)  # unknown key -> sidecars


def read_own(
    rel: str, path: str, files: dict[str, os.DirEntry], names: list[str], cache: ScanCache, notes: FolderNotes, use: Ed2Use
) -> ImageOwn | None:
    """What the caption files `names` of one image (ordered from the one that yields to the
    one that wins) say together; None when none of them says anything."""
    merged, settings = None, {}
    kinds = set()
    for name in names:
        source = f"{rel}/{name}" if rel else name
        entry = _read_entry(rel, path, files, name, source, cache, notes)
        if entry is None:
            continue
        if entry.empty:
            notes.empty.append(source)
            continue
        kinds.add("yaml" if name.lower().endswith(_YAML) else "text")
        merged = entry if merged is None else entry.over(merged)
        if entry.settings:
            settings.update(_parsed_settings(entry, source, notes))
        if entry.keys:  # a yaml file
            for key in entry.unknown:
                notes.unknown.setdefault(key, []).append(source)
            use.unused.update(k for k in entry.keys if k in UNUSED_KEYS)
            use.caption_key += "caption" in entry.keys
    if merged is None:
        return None
    use.text_captions += "text" in kinds
    use.yaml_captions += "yaml" in kinds
    use.merged += len(kinds) == 2
    if merged.max_caption_length is not None:
        use.max_length += 1
    if settings:
        use.image_settings.update(settings.keys())
    if len(merged.tags) > 1 and len({t.text for t in merged.tags}) < len(merged.tags):
        use.repeated += 1
    return ImageOwn(merged.main_prompt, merged.tags, merged.max_caption_length, tuple(settings.items()))


def _parsed_settings(entry: Entry, source: str, notes: FolderNotes) -> dict[str, object]:
    out = {}
    for key, value in entry.settings:
        try:
            out[key] = parse_setting(key, value, f"{source} ({key})")
        except SettingError as exc:
            if str(exc) not in notes.errors:
                notes.errors.append(str(exc))
    return out


def _read_entry(
    rel: str, path: str, files: dict[str, os.DirEntry], name: str, source: str, cache: ScanCache, notes: FolderNotes
) -> Entry | None:
    """The entry of caption file `name`, None (and an error) if the file is unusable.
    Cached as ["entry", Entry.to_json()] or ["error", message]."""
    try:
        st = files[name].stat()
        entry = _decoded(cache.caption(rel, name, st.st_size, st.st_mtime_ns))
        if entry is None:
            try:  # a pipe, device or huge file is refused without reading it
                data = read_small(os.path.join(path, name), source, TEXT_FILE_LIMIT)
                entry = parse_caption_file(data, source, IMAGE_SETTING_KEYS)
                cache.store_caption(rel, name, st.st_size, st.st_mtime_ns, ["entry", entry.to_json()])
            except DataRootError as exc:  # CaptionError is one
                entry = str(exc)
                cache.store_caption(rel, name, st.st_size, st.st_mtime_ns, ["error", entry])
    except OSError as exc:
        entry = f"{source}: cannot read ({exc.strerror or exc})"
    if isinstance(entry, str):
        if entry not in notes.errors:  # one caption file may serve img.png and img.jpg
            notes.errors.append(entry)
        return None
    return entry


def _decoded(cached) -> Entry | str | None:
    """A cached parse: the entry, the error message, or None if absent or damaged."""
    try:
        kind, value = cached
        if kind == "error" and isinstance(value, str):
            return value
        return Entry.from_json(value) if kind == "entry" else None
    except (TypeError, ValueError):
        return None
