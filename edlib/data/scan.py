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
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from pathlib import Path

from edlib.data.captions import CAPTION_SUFFIXES, parse_caption_file, stem_caption, with_trigger
from edlib.data.folder_files import FOLDER_FILES, GLOBAL_YAML, Layer, format_value, near_miss, read_folder
from edlib.data.images import ImageReadError, read_header
from edlib.data.scan_cache import ScanCache
from edlib.data.scan_guards import control_character, outside_link, printable
from edlib.data.small_files import TEXT_FILE_LIMIT, file_kind, read_small
from edlib.data.types import (
    IMAGE_EXTENSIONS,
    QUARANTINE_DIR,
    Caption,
    DataRootError,
    FolderInfo,
    FolderSettings,
    ImageItem,
    ScanResult,
    Tag,
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

    for folder in _walk(root_path, result.warnings, follow_outside_links):
        parent = inherited.get(folder.rel.rpartition("/")[0], Layer()) if folder.rel else Layer()
        read = read_folder(Path(folder.path), folder.rel, set(folder.files), parent)
        inherited[folder.rel] = read.inherited
        result.errors.extend(read.errors)
        result.warnings.extend(read.warnings)
        items = _scan_images(folder, read.settings, cache, result)
        result.warnings.extend(_name_warnings(folder, read.files, has_images=bool(items)))
        if not items:
            continue
        result.items.extend(items)
        info = FolderInfo(folder.rel, len(items), read.settings, read.sources)
        result.folders.append(info)
        result.warnings.extend(_log_applied(info, log))

    if use_cache:
        cache.save()
    small = [i for i in result.items if i.width < SMALL_SIDE or i.height < SMALL_SIDE]
    if small:
        tiny = min(small, key=lambda i: i.width * i.height)
        result.warnings.append(
            f"{len(small)} image(s) smaller than {SMALL_SIDE} px on a side will be upscaled a lot "
            f"in training (smallest: {tiny.path}, {tiny.width}x{tiny.height})"
        )
    result.items.sort(key=attrgetter("path"))
    result.folders.sort(key=attrgetter("path"))
    return result


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
    real_root = os.path.realpath(root)
    seen: dict[tuple[int, int], str] = {}
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
                if _usable_subfolder(entry, path, _join(rel, name), real_root, follow_outside_links, warnings):
                    subdirs.append(name)
            else:
                folder.files[name] = entry
        folder.classify()
        _refuse_files(folder, real_root, follow_outside_links, warnings)
        try:
            yield folder
        finally:
            if fd is not None:
                os.close(fd)
        for name in sorted(subdirs, reverse=True):
            stack.append((_join(rel, name), os.path.join(path, name)))


def _usable_subfolder(
    entry: os.DirEntry, parent: str, rel: str, real_root: str, follow_outside_links: bool, warnings: list[str]
) -> bool:
    """Whether to walk into a subfolder; warns about odd names and links that leave the data root."""
    bad = control_character(entry.name)
    if bad:
        warnings.append(f"{printable(rel)}: skipped, the folder name contains {bad}; rename it to use its images")
        return False
    target = outside_link(entry, parent, real_root)
    if target is not None:
        if not follow_outside_links:
            warnings.append(
                f"{rel}: skipped, a symbolic link to {target}, outside the data root (follow_outside_links is off)"
            )
            return False
        warnings.append(
            f"{rel}: a symbolic link to {target}, outside the data root; its images are used "
            "(set follow_outside_links: false to skip links that leave the data root)"
        )
    if entry.name in FOLDER_FILES:
        warnings.append(
            f"{rel}: is a folder, so it is not read as a setting; {entry.name} must be a file "
            "(the folder's images are scanned as a subfolder)"
        )
    return True


def _refuse_files(folder: _Dir, real_root: str, follow_outside_links: bool, warnings: list[str]) -> None:
    """Mark the images `_headers` must skip (`folder.refused`): names with a control
    character, and links to files outside the data root unless those are followed (then
    one warning per folder says so)."""
    outside = []
    for name, _ in folder.images:
        bad = control_character(name)
        if bad:
            folder.refused[name] = f"its name contains {bad}; rename the file to use it"
        elif outside_link(folder.files[name], folder.path, real_root) is not None:
            outside.append(name)
            if not follow_outside_links:
                folder.refused[name] = (
                    "a symbolic link to a file outside the data root; skipped (follow_outside_links is off)"
                )
    if outside and follow_outside_links:
        first = _join(folder.rel, outside[0])
        warnings.append(
            f"{folder.rel or '.'}: {len(outside)} image(s) are symbolic links to files outside the data root "
            f"(e.g. {first} -> {os.path.realpath(os.path.join(folder.path, outside[0]))}); used "
            "(set follow_outside_links: false to skip them)"
        )


def _scan_images(folder: _Dir, settings: FolderSettings, cache: ScanCache, result: ScanResult) -> list[ImageItem]:
    """The usable images directly in `folder`, with sizes and captions."""
    items = []
    both_kinds, empty_captions, sidecar_settings = [], [], []
    rel, prefix, trigger = folder.rel, _join(folder.rel, ""), settings.trigger
    for (name, stem), header in zip(folder.images, _headers(folder, cache, result)):
        if header is None:
            continue
        caption = None
        found = folder.captions.get(stem)
        if found:
            if len(found) > 1:
                found = sorted(found, key=lambda n: _CAPTION_ORDER["." + n.rpartition(".")[2].lower()])
            if found[0].lower().endswith((".txt", ".caption")) and found[-1].lower().endswith((".yaml", ".yml")):
                both_kinds.append(found[0])
            caption, extra = _read_caption(folder, found[0], cache, result)
            if extra:
                sidecar_settings.append(f"{', '.join(extra)} in {found[0]}")
            if caption is not None and not caption.main_prompt and not caption.tags:
                empty_captions.append(found[0])
                caption = None
        if caption is None:
            caption = stem_caption(stem)
        if trigger:
            caption = with_trigger(caption, trigger)
        items.append(ImageItem(prefix + name, rel, header[0], header[1], caption))

    shown = folder.rel or "."
    if both_kinds:
        result.warnings.append(
            f"{shown}: {len(both_kinds)} image(s) have both a text and a .yaml caption; "
            f"the text one is used (e.g. {both_kinds[0]})"
        )
    if empty_captions:
        result.warnings.append(
            f"{shown}: {len(empty_captions)} caption file(s) are empty; "
            f"the file name is used instead (e.g. {empty_captions[0]})"
        )
    if sidecar_settings:
        result.warnings.append(
            f"{shown}: per-image settings in .yaml sidecars are ignored, put them in local.yaml "
            f"({'; '.join(sidecar_settings[:3])})"
        )
    return items


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


def _read_caption(folder: _Dir, name: str, cache: ScanCache, result: ScanResult) -> tuple[Caption | None, list[str]]:
    """The caption in file `name` and any per-image setting keys it holds; None (and an
    error) if the file is unusable. Cached as [main, [[tag, weight], ...], extra] or [error]."""
    rel = _join(folder.rel, name)
    try:
        st = folder.files[name].stat()
        cached = cache.caption(folder.rel, name, st.st_size, st.st_mtime_ns)
        if cached is None:
            try:
                data = read_small(os.path.join(folder.path, name), rel, TEXT_FILE_LIMIT)
                caption, extra = parse_caption_file(data, rel)
                cached = [caption.main_prompt, [[t.text, t.weight] for t in caption.tags], list(extra)]
            except DataRootError as exc:  # a bad caption, or a pipe, device or huge file
                cached = [str(exc)]
            cache.store_caption(folder.rel, name, st.st_size, st.st_mtime_ns, cached)
    except OSError as exc:
        cached = [f"{rel}: cannot read ({exc.strerror or exc})"]
    if len(cached) == 1:
        if cached[0] not in result.errors:  # one caption file may serve img.png and img.jpg
            result.errors.append(cached[0])
        return None, []
    main, tags, extra = cached
    return Caption(main, tuple(Tag(text, weight) for text, weight in tags)), extra


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
    for key in _LOGGED_SETTINGS:
        source = info.sources.get(key)
        if source is None:
            continue
        value = getattr(info.settings, key)
        label, shown = _label(info.path, key, source), format_value(value)
        log.info("%s: %s for %d image(s) in %s", label, shown, info.images, _where(info.path))
        if key == "loss_scale" and value <= 0:
            message = (
                f"{source}: loss_scale is {format_value(value)} for the {info.images} image(s) in {_where(info.path)}: "
                + ("training pushes the model AWAY from these images" if value < 0 else "these images teach nothing")
            )
            log.warning(message)
            warnings.append(message)
    return warnings


def _label(folder: str, key: str, source: str) -> str:
    """'a/multiply.txt' for a folder's own file, 'multiply from a/global.yaml' otherwise."""
    if os.path.dirname(source) == folder and not source.endswith((".yaml", ".yml")):
        return source
    return f"{key} from {source}"


def _first_reasons(result: ScanResult, limit: int = 3) -> str:
    return "; ".join(f"{path}: {reason}" for path, reason in result.skipped[:limit])


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _where(rel: str) -> str:
    """A folder for prose in messages."""
    return rel or "the data root"


# ---- re-reading settings between epochs ---------------------------------------------------


def reread_settings(result: ScanResult, logger: logging.Logger | None = None) -> tuple[ScanResult, list[str]]:
    """Re-read every folder's setting files; images are not re-scanned.

    Changed values are applied and logged ("a/b/multiply.txt: 1 -> 2.5"). A bad value keeps
    the previous one and yields a warning; this never raises for bad values, so an edit
    mid-run cannot stop training. Images that disappeared (moved to quarantine, deleted) are
    dropped. Returns the new result and the messages (changes and warnings).
    """
    log = logger or _log
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
        for f in fields(FolderSettings):
            old, new = getattr(info.settings, f.name), getattr(settings, f.name)
            if old != new:
                source = sources.get(f.name) or info.sources.get(f.name) or f.name
                message = f"{_label(info.path, f.name, source)}: {format_value(old)} -> {format_value(new)}"
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
    new = ScanResult(result.root, folders, items, list(result.warnings), list(result.errors), list(result.skipped))
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
    """Items whose file still exists, with the trigger of their folder's current settings."""
    root = str(result.root)
    items, gone = [], []
    for item in result.items:
        if not os.path.exists(os.path.join(root, item.path)):
            gone.append(item.path)
            continue
        trigger = settings[item.folder].trigger if item.folder in settings else item.caption.trigger
        if trigger != item.caption.trigger:
            untriggered = replace(item.caption, trigger=None)
            item = replace(item, caption=with_trigger(untriggered, trigger))
        items.append(item)
    return items, gone


# ---- reports ------------------------------------------------------------------------------


def report_json(result: ScanResult) -> dict:
    """The scan as one JSON-able object (what `edlib scan --json` prints)."""
    return {
        "folders": [
            {
                "path": f.path,
                "images": f.images,
                "multiply": float(f.settings.multiply),
                "loss_scale": f.settings.loss_scale,
                "trigger": f.settings.trigger,
                "flip_p": f.settings.flip_p,
                "cond_dropout": f.settings.cond_dropout,
                "shuffle_tags": f.settings.shuffle_tags,
                "batch_id": f.settings.batch_id,
                "sources": dict(f.sources),
            }
            for f in result.folders
        ],
        "images": len(result.items),
        "warnings": list(result.warnings),
        "errors": list(result.errors),
    }


def format_report(result: ScanResult) -> str:
    """The scan as a table for the terminal, then warnings, errors and skipped files."""
    header = ("folder", "images", "multiply", "loss_scale", "flip_p", "trigger")
    rows = [
        (
            f.path or ".",
            str(f.images),
            format_value(f.settings.multiply),
            format_value(f.settings.loss_scale),
            format_value(f.settings.flip_p),
            f.settings.trigger or "",
        )
        for f in result.folders
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"data root {result.root}: {len(result.items)} images in {len(result.folders)} folders", ""]
    for row in [header, *rows]:
        cells = [cell.ljust(w) if i in (0, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    for title, entries in (("warnings", result.warnings), ("errors", result.errors)):
        if entries:
            lines += ["", f"{title} ({len(entries)}):", *(f"  {e}" for e in entries)]
    if result.skipped:
        lines += ["", f"skipped {len(result.skipped)} file(s) that are not usable images (listed in the warnings)"]
    return "\n".join(lines)
