"""Settings edited while a run trains: `reread_settings` is what the trainer calls between
epochs to pick up edited setting files (multiply.txt, loss_scale.txt, EveryDream2 yaml, ...)
and drop images that vanished (quarantined), without re-scanning images."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

from edlib.data.captions import compose_caption
from edlib.data.folder_files import (
    CAPTION_FIELDS,
    GLOBAL_YAML,
    Layer,
    format_value,
    read_folder,
    reported_sources,
    setting_label,
)
from edlib.data.types import FolderInfo, FolderSettings, ImageItem, ScanResult


def reread_settings(result: ScanResult, logger: logging.Logger | None = None) -> tuple[ScanResult, list[str]]:
    """Re-read every folder's setting files; images are not re-scanned.

    Changed values are applied and logged ("a/b/multiply.txt: 1 -> 2.5"). A bad value keeps
    the previous one and yields a warning; this never raises for bad values, so an edit
    mid-run cannot stop training. Images that disappeared (moved to quarantine, deleted) are
    dropped. Returns the new result and the messages (changes and warnings).
    """
    log = logger or logging.getLogger("edlib.data")
    root = Path(result.root)
    messages: list[str] = []
    inherited_at: dict[str, _Inherited] = {}
    folders = []
    for info in result.folders:
        folder_path = root / info.path
        try:
            names = {n for n in os.listdir(folder_path) if not n.startswith(".")}
        except OSError as exc:
            message = f"{info.path or '.'}: cannot list folder ({exc.strerror or exc}); keeping its settings"
            log.warning(message)
            messages.append(message)
            folders.append(info)
            continue
        parent = _inherited(root, info.path.rpartition("/")[0], inherited_at) if info.path else _Inherited(Layer())
        read = read_folder(folder_path, info.path, names, parent.layer)
        failed = read.failed
        for message in [*parent.errors, *read.errors]:
            kept = f"{message}; keeping the previous value"
            if kept not in messages:
                log.warning(kept)
                messages.append(kept)
        settings = read.settings.with_(**{key: getattr(info.settings, key) for key in failed})
        sources = {**read.sources, **{k: info.sources[k] for k in failed if k in info.sources}}
        # An exclude.txt added or removed is why multiply changed: messages name it.
        named, named_before = reported_sources(settings, sources), reported_sources(info.settings, info.sources)
        for f in fields(FolderSettings):
            old, new = getattr(info.settings, f.name), getattr(settings, f.name)
            if old != new:
                source = named.get(f.name) or named_before.get(f.name) or f.name
                message = f"{setting_label(info.path, f.name, source)}: {format_value(old)} -> {format_value(new)}"
                log.info(message)
                messages.append(message)
        folders.append(FolderInfo(info.path, info.images, settings, sources))

    items, gone = _present_items(result, {f.path: f.settings for f in folders})
    if gone:
        message = f"{len(gone)} image(s) no longer in the data root are dropped (e.g. {gone[0]})"
        log.warning(message)
        messages.append(message)
    counts: dict[str, int] = {}
    for item in items:
        counts[item.folder] = counts.get(item.folder, 0) + 1
    folders = [replace(f, images=counts[f.path]) for f in folders if counts.get(f.path)]
    new = replace(result, folders=folders, items=items, warnings=list(result.warnings), errors=list(result.errors))
    return new, messages


@dataclass
class _Inherited:
    """What a folder inherits from the global.yaml files above it, and their errors."""

    layer: Layer
    errors: list[str] = field(default_factory=list)


def _inherited(root: Path, rel: str, memo: dict[str, _Inherited]) -> _Inherited:
    """The global.yaml layers from the root down to folder `rel` (inclusive)."""
    if rel in memo:
        return memo[rel]
    parent = _inherited(root, rel.rpartition("/")[0], memo) if rel else _Inherited(Layer())
    names = {n for n in GLOBAL_YAML if (root / rel / n).is_file()}
    if names:
        read = read_folder(root / rel, rel, names, parent.layer)
        parent = _Inherited(read.inherited, parent.errors + read.errors)
    memo[rel] = parent
    return parent


def _present_items(result: ScanResult, settings: dict[str, FolderSettings]) -> tuple[list[ImageItem], list[str]]:
    """Items whose file still exists, their captions rebuilt where their folder's caption
    keys or trigger changed (the images' own caption files are not re-read)."""
    root = str(result.root)
    before = {f.path: f.settings for f in result.folders}
    changed = {
        path
        for path, new in settings.items()
        if path in before and any(getattr(new, k) != getattr(before[path], k) for k in (*CAPTION_FIELDS, "trigger"))
    }
    items, gone = [], []
    for item in result.items:
        if not os.path.exists(os.path.join(root, item.path)):
            gone.append(item.path)
            continue
        if item.folder in changed:
            stem = item.path.rpartition("/")[2].rpartition(".")[0]
            item = replace(item, caption=compose_caption(item.own, stem, settings[item.folder]))
        items.append(item)
    return items, gone
