"""Scanning a data root: every image below it, its size, caption and folder settings.

`scan(root)` walks the tree once. Per folder it lists the entries a single time and finds
caption and setting files by name in that listing (no per-image exists() calls), reads
image sizes from headers only (see `images.read_header`) and reads folder files with the
rules of `folder_files`. Problems never stop the scan, so the user sees all of them at once:

- `errors`: bad setting values, captions that are not UTF-8 or not valid YAML. The CLI,
  preview and trainer refuse to run while there are errors.
- `warnings`: near-miss file names (`multiply.txt.txt`), setting files in folders without
  images, skipped images, symlink loops, tiny images, ...
- `skipped`: images that cannot be used (empty, truncated, not an image, decompression
  bomb), with the reason. They are never modified or deleted.

Files and folders whose names start with "." are ignored (`.ipynb_checkpoints`, macOS `._x.jpg`
resource forks). Symlinked folders are followed once: a folder reached again (a loop, or a
second link to it) is skipped with a warning. A symlink that leads outside the data root is
followed with a warning naming it (once per folder link; per folder for image links), or
skipped with `follow_outside_links=False`. Images that are not regular files (a named pipe,
a device) are skipped without being opened, and so are files and folders whose names hold a
control character (a newline or tab would break the one-line-per-sample schedule files).

A scan cache (see `scan_cache`) remembers headers and captions by size and mtime, so a
re-scan of an unchanged tree only lists folders and stats files. `reread_settings` is what the
trainer calls between epochs to pick up edited setting files without re-scanning images.
"""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path

from edlib.data.captions import CAPTION_SUFFIXES, compose_caption
from edlib.data.ed2_summary import Ed2Use
from edlib.data.folder_files import (
    FOLDER_FILES,
    GLOBAL_YAML,
    SETTING_FILES,
    FolderRead,
    Layer,
    format_value,
    near_miss,
    read_folder,
    reported_sources,
    setting_label,
)
from edlib.data.images import ImageReadError, read_header
from edlib.data.own_files import FolderNotes, read_own
from edlib.data.scan_cache import ScanCache
from edlib.data.scan_guards import printable, refused_files, usable_subfolder
from edlib.data.scan_report import format_report, report_json  # noqa: F401  (part of this module's API)
from edlib.data.sidecars import UNUSED_KEYS
from edlib.data.small_files import file_kind
from edlib.data.types import (
    IMAGE_EXTENSIONS,
    IMAGE_SETTING_KEYS,
    QUARANTINE_DIR,
    DataRootError,
    FolderInfo,
    FolderSettings,
    ImageItem,
    ScanResult,
)

_log = logging.getLogger("edlib.data")

# Images smaller than this on a side are reported (they are upscaled a lot in training).
SMALL_SIDE = 64

# Picture formats users drop into folders that are not training images (DESIGN.md lists the
# supported ones): reported so a folder of .heic photos is not silently empty.
UNSUPPORTED_PICTURES = frozenset(
    {".gif", ".tif", ".tiff", ".heic", ".heif", ".avif", ".jxl", ".psd", ".dng", ".cr2", ".nef", ".arw"}
)

_LOGGED_SETTINGS = ("multiply", "loss_scale")
_CAPTION_ORDER = {suffix: i for i, suffix in enumerate(CAPTION_SUFFIXES)}

# Extensions without their dot, for matching the result of one str.rpartition per name.
_IMAGE_EXT = frozenset(e[1:] for e in IMAGE_EXTENSIONS)
_CAPTION_EXT = frozenset(e[1:] for e in CAPTION_SUFFIXES)
_UNSUPPORTED_EXT = frozenset(e[1:] for e in UNSUPPORTED_PICTURES)
_LIST_BY_FD = os.scandir in os.supports_fd and hasattr(os, "O_DIRECTORY")


@dataclass
class _Dir:
    """One listed folder: its (non-hidden) file entries by name, and its images and caption
    files found by splitting each name once (scans of 100,000 files feel every call)."""

    rel: str
    path: str
    files: dict[str, os.DirEntry] = field(default_factory=dict)
    images: list[tuple[str, str]] = field(default_factory=list)  # (name, stem), sorted
    captions: dict[str, list[str]] = field(default_factory=dict)  # stem -> caption file names
    unsupported: list[str] = field(default_factory=list)  # pictures in formats not trained on
    refused: dict[str, str] = field(default_factory=dict)  # file name -> why it is not used

    def classify(self) -> None:
        """Sort the file names into images, caption files and unsupported pictures."""
        for name in self.files:
            stem, dot, ext = name.rpartition(".")
            if not dot:
                continue
            ext = ext.lower()
            if ext in _IMAGE_EXT:
                self.images.append((name, stem))
            elif ext in _CAPTION_EXT:
                self.captions.setdefault(stem, []).append(name)
            elif ext in _UNSUPPORTED_EXT:
                self.unsupported.append(name)
        self.images.sort()


def scan(
    root: str | os.PathLike,
    *,
    use_cache: bool = True,
    logger: logging.Logger | None = None,
    follow_outside_links: bool = True,
) -> ScanResult:
    """Scan a data root. Raises `DataRootError` if it is missing, not a folder, or holds no
    usable image; every other problem is collected in the result. `follow_outside_links`
    False skips symlinks that lead outside the data root (else they are followed, with a
    warning)."""
    root_path = _checked_root(root)
    with _gc_paused():
        result = _scan(root_path, use_cache, logger or _log, follow_outside_links)
    if not result.items:
        detail = f"; {len(result.skipped)} image file(s) skipped: " + _first_reasons(result) if result.skipped else ""
        raise DataRootError(f"data root {root_path} holds no usable images{detail}")
    return result


@contextmanager
def _gc_paused():
    """Pause the cyclic garbage collector: a scan allocates hundreds of thousands of small
    objects and no cycles, and collections triggered by that growth would re-walk every
    object already made, costing a cached re-scan about a third of its time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _scan(root_path: Path, use_cache: bool, log: logging.Logger, follow_outside_links: bool = True) -> ScanResult:
    cache = ScanCache.load(root_path) if use_cache else ScanCache(root_path.resolve())
    result = ScanResult(root=root_path, folders=[], items=[])
    inherited: dict[str, Layer] = {}
    use = Ed2Use()

    for folder in _walk(root_path, result.warnings, follow_outside_links):
        parent = inherited.get(folder.rel.rpartition("/")[0], Layer()) if folder.rel else Layer()
        read = read_folder(Path(folder.path), folder.rel, set(folder.files), parent)
        inherited[folder.rel] = read.inherited
        result.errors.extend(read.errors)
        result.warnings.extend(read.warnings)
        items = _scan_images(folder, read.settings, cache, result, use)
        _count_folder_files(read, use, has_images=bool(items))
        result.warnings.extend(_name_warnings(folder, read.files, has_images=bool(items)))
        if not items:
            continue
        result.items.extend(items)
        info = FolderInfo(folder.rel, len(items), read.settings, read.sources)
        result.folders.append(info)
        result.warnings.extend(_log_applied(info, log))
        if read.settings.exclude:
            result.warnings.append(_excluded_warning(info, read.exclude_note))

    if use_cache:
        cache.save()
    result.everydream2 = use.lines()
    small = [i for i in result.items if i.width < SMALL_SIDE or i.height < SMALL_SIDE]
    if small:
        tiny = min(small, key=lambda i: i.width * i.height)
        result.warnings.append(
            f"{len(small)} image(s) smaller than {SMALL_SIDE} px on a side will be upscaled a lot "
            f"in training (smallest: {tiny.path}, {tiny.width}x{tiny.height})"
        )
    if result.folders and all(f.settings.exclude for f in result.folders):
        result.warnings.append("every folder with images is excluded (exclude.txt): training has nothing to train on")
    result.items.sort(key=attrgetter("path"))
    result.folders.sort(key=attrgetter("path"))
    return result


def _excluded_warning(info: FolderInfo, note: str | None) -> str:
    source = info.sources["exclude"]
    said = f' (it says: "{note[:120]}")' if note else ""
    return (
        f"{info.path or '.'}: its {info.images} image(s) are excluded from training by {source}{said}: "
        f"0 samples per epoch; delete {source} (or undo the balance that wrote it) to train them again"
    )


def _checked_root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser().absolute()
    if not path.exists():
        raise DataRootError(f"data root {path} does not exist")
    if not path.is_dir():
        raise DataRootError(f"data root {path} is not a folder")
    return path


def _walk(root: Path, warnings: list[str], follow_outside_links: bool = True) -> Iterator[_Dir]:
    """Folders below `root`, each parent before its children, listed once each.

    Folders are recognised by (device, inode), so a symlink back up the tree (a loop) or a
    second link to the same folder is skipped with a warning instead of recursing forever.
    """
    seen: dict[tuple[int, int], str] = {}
    real_root = os.path.realpath(root)
    stack = [("", str(root))]
    while stack:
        rel, path = stack.pop()
        shown = rel or "."
        fd = None
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
            if key in seen:
                first = seen[key] or "."
                warnings.append(f"{shown}: skipped, it is a link to the folder {first} already scanned (symlink loop?)")
                continue
            if _LIST_BY_FD:
                # Listing through an open folder lets each entry.stat() skip the path lookup,
                # the biggest cost of a cached re-scan.
                fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
            with os.scandir(path if fd is None else fd) as it:
                entries = list(it)
        except OSError as exc:
            if fd is not None:
                os.close(fd)
            warnings.append(f"{shown}: cannot list folder ({exc.strerror or exc}); skipped")
            continue
        seen[key] = rel
        folder = _Dir(rel, path)
        subdirs = []
        for entry in entries:
            name = entry.name
            if name[0] == "." or (not rel and name == QUARANTINE_DIR):
                continue
            try:
                is_dir = entry.is_dir()
            except OSError as exc:  # e.g. a symlink to itself
                warnings.append(f"{printable(_join(rel, name))}: cannot follow ({exc.strerror or exc}); skipped")
                continue
            if is_dir:
                if usable_subfolder(entry, path, _join(rel, name), real_root, follow_outside_links, warnings):
                    subdirs.append(name)
            else:
                folder.files[name] = entry
        folder.classify()
        folder.refused = refused_files(folder, real_root, follow_outside_links, warnings)
        try:
            yield folder
        finally:
            if fd is not None:
                os.close(fd)
        for name in sorted(subdirs, reverse=True):
            stack.append((_join(rel, name), os.path.join(path, name)))


def _scan_images(
    folder: _Dir, settings: FolderSettings, cache: ScanCache, result: ScanResult, use: Ed2Use
) -> list[ImageItem]:
    """The usable images directly in `folder`, with sizes and captions."""
    items = []
    notes = FolderNotes()
    rel, prefix = folder.rel, _join(folder.rel, "")
    captions = folder.captions
    without_main = 0
    for (name, stem), header in zip(folder.images, _headers(folder, cache, result)):
        if header is None:
            continue
        own = None
        found = captions.get(stem)
        if found:
            if len(found) > 1:
                found = sorted(found, key=lambda n: _CAPTION_ORDER["." + n.rpartition(".")[2].lower()])
            own = read_own(rel, folder.path, folder.files, found, cache, notes, use)
        if own is None or not own.main_prompt:
            without_main += 1
        caption = compose_caption(own, stem, settings)
        if len(caption.tags) > 1 and caption.tags[0].weight != caption.tags[-1].weight:  # sorted by weight
            use.weighted += 1
        items.append(ImageItem(prefix + name, rel, header[0], header[1], caption, own))
    if not settings.main_prompt:
        use.name_captions += without_main

    shown = folder.rel or "."
    result.errors.extend(e for e in notes.errors if e not in result.errors)
    if notes.empty:
        result.warnings.append(
            f"{shown}: {len(notes.empty)} caption file(s) are empty; the folder's main prompt "
            f"or the file name is used instead (e.g. {notes.empty[0]})"
        )
    for key, files in notes.unknown.items():
        result.warnings.append(
            f"{shown}: unknown key {key!r} in {len(files)} .yaml caption(s) ignored (e.g. {files[0]}; "
            f"known: main_prompt, tags, caption, max_caption_length, {', '.join(IMAGE_SETTING_KEYS)})"
        )
    return items


def _count_folder_files(read: FolderRead, use: Ed2Use, *, has_images: bool) -> None:
    """Count the folder's EveryDream2 files for the scan summary."""
    for source, keys in read.yaml_keys.items():
        if {"main_prompt", "tags", "caption"} & set(keys):
            use.folder_captions.append(source)
        use.yaml_settings.update(k for k in keys if k not in ("main_prompt", "tags", "caption") and k not in UNUSED_KEYS)
        use.unused.update(k for k in keys if k in UNUSED_KEYS)
    if has_images:
        use.setting_files.update(os.path.basename(f) for f in read.files if os.path.basename(f) in SETTING_FILES)


def _headers(folder: _Dir, cache: ScanCache, result: ScanResult) -> list[tuple[int, int] | None]:
    """(width, height) of each image of `folder.images`, None for skipped ones. Headers
    come from the cache when the file is unchanged, else from the file."""
    names, stats, unreadable = [], [], dict(folder.refused)
    files = folder.files
    for name, _ in folder.images:
        if name in unreadable:
            continue
        try:
            st = files[name].stat()
        except OSError as exc:  # e.g. a broken symlink
            unreadable[name] = f"cannot read ({exc.strerror or exc})"
            continue
        kind = file_kind(st.st_mode)
        if kind is not None:  # opening a named pipe would wait forever; a device never ends
            unreadable[name] = f"{kind}, not an image file; skipped without opening it"
            continue
        names.append(name)
        stats += (st.st_size, st.st_mtime_ns)
    headers = cache.headers(folder.rel, names, stats)
    for i, header in enumerate(headers):
        if header is None:
            try:
                found = read_header(os.path.join(folder.path, names[i]))
                headers[i] = (found.width, found.height)
            except ImageReadError as exc:
                headers[i] = exc.reason
    cache.store_headers(folder.rel, names, stats, headers)

    by_name = dict(zip(names, headers))
    out = []
    for name, _ in folder.images:
        header = by_name.get(name) or unreadable[name]
        if isinstance(header, str):
            _skip(result, _join(folder.rel, name), header)
            header = None
        out.append(header)
    return out


def _skip(result: ScanResult, rel: str, reason: str) -> None:
    result.skipped.append((rel, reason))
    result.warnings.append(f"skipped {printable(rel)}: {reason}")


def _name_warnings(folder: _Dir, folder_files: list[str], *, has_images: bool) -> list[str]:
    """Near-miss names of folder files, and folder files that apply to nothing."""
    out = []
    if folder.unsupported:
        kinds = sorted({os.path.splitext(n)[1].lower() for n in folder.unsupported})
        out.append(
            f"{folder.rel or '.'}: {len(folder.unsupported)} picture(s) ignored, {', '.join(kinds)} is not a "
            f"supported image type (use {', '.join(sorted(IMAGE_EXTENSIONS))}; "
            f"e.g. {_join(folder.rel, folder.unsupported[0])})"
        )
    image_stems = {stem for _, stem in folder.images}
    for name in sorted(folder.files):
        if name in FOLDER_FILES or name.rpartition(".")[0] in image_stems:
            continue  # a real folder file, or an image's caption
        meant = near_miss(name)
        if meant:
            also = f" ({meant} also exists)" if meant in folder.files else ""
            out.append(
                f"{_join(folder.rel, name)}: ignored, did you mean {meant}? Rename it to {meant} to use it{also}"
            )
    if not has_images:
        local = [f for f in folder_files if os.path.basename(f) not in GLOBAL_YAML]
        if local:
            out.append(
                f"{', '.join(local)}: no images directly in {_where(folder.rel)}, so this applies to nothing "
                "(folder files never apply to subfolders; use global.yaml for that)"
            )
    return out


def _log_applied(info: FolderInfo, log: logging.Logger) -> list[str]:
    """Log each multiply / loss_scale applied (once per scan); return loud warnings."""
    warnings = []
    sources = reported_sources(info.settings, info.sources)  # an excluded folder's 0: its exclude.txt
    for key in _LOGGED_SETTINGS:
        source = sources.get(key)
        if source is None:
            continue
        value = getattr(info.settings, key)
        if key == "multiply" and info.settings.exclude:
            log.info("%s: excluded, 0 samples per epoch for %d image(s) in %s", source, info.images, _where(info.path))
            continue
        label, shown = setting_label(info.path, key, source), format_value(value)
        log.info("%s: %s for %d image(s) in %s", label, shown, info.images, _where(info.path))
        if key == "loss_scale" and value <= 0:
            message = (
                f"{source}: loss_scale is {format_value(value)} for the {info.images} image(s) in {_where(info.path)}: "
                + ("training pushes the model AWAY from these images" if value < 0 else "these images teach nothing")
            )
            log.warning(message)
            warnings.append(message)
    return warnings


def _first_reasons(result: ScanResult, limit: int = 3) -> str:
    return "; ".join(f"{path}: {reason}" for path, reason in result.skipped[:limit])


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _where(rel: str) -> str:
    """A folder for prose in messages."""
    return rel or "the data root"


# ---- re-reading settings between epochs ---------------------------------------------------

