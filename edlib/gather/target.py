"""The gathered folder: where it may be, and writing files into it safely.

The folder must be inside the data root (that is where training finds it), must not be
the data root itself, and must be new or one that `edlib gather` made: files a user put
there are never overwritten. Its hidden `.gather/` subfolder (ignored by the scan, like
every name starting with ".") holds the journal, img2dataset's work files and caches.

Every image and caption is written beside its final name under a hidden temporary name
and renamed into place, so a crash never leaves half an image the scan could load. The
caption goes in first: an image never appears without its caption (the scan would then
caption it from its file name).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from edlib.data.types import IMAGE_EXTENSIONS, QUARANTINE_DIR
from edlib.gather.errors import GatherError
from edlib.gather.folder_pool import SourceCaption

STAGING = ".gather"
JOURNAL = "journal.jsonl"
_CAPTION_SUFFIXES = (".txt", ".yaml", ".yml")


@dataclass(frozen=True)
class Target:
    root: Path  # the data root, absolute
    rel: str  # the gathered folder relative to it, POSIX
    path: Path

    @property
    def staging(self) -> Path:
        return self.path / STAGING

    @property
    def journal(self) -> Path:
        return self.staging / JOURNAL


def resolve_target(data_root: str | Path, folder: str | Path) -> Target:
    """Check where the gathered folder goes; raises GatherError naming the problem."""
    root = Path(data_root).expanduser().absolute()
    if not root.is_dir():
        raise GatherError(f"data root {root} is not a folder (create it, or check the path)")
    root = root.resolve()
    given = Path(folder).expanduser()
    path = (given if given.is_absolute() else root / given).resolve()
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        raise GatherError(
            f"the folder to gather into, {path}, is outside the data root {root}: training would not see it. "
            "Give a folder name inside the data root, e.g. ground_truth"
        ) from None
    if rel in ("", "."):
        raise GatherError(f"gather into a new folder inside the data root {root}, not the data root itself (e.g. ground_truth)")
    parts = rel.split("/")
    if any(p.startswith(".") for p in parts) or parts[0] == QUARANTINE_DIR:
        raise GatherError(f"{rel}: the scan ignores folders named with a leading '.' or {QUARANTINE_DIR}; choose another name")
    if path.exists() and not path.is_dir():
        raise GatherError(f"{path} exists and is not a folder")
    target = Target(root, rel, path)
    if path.is_dir() and not target.journal.is_file():
        foreign = [e.name for e in os.scandir(path) if e.name != STAGING]
        if foreign:
            raise GatherError(
                f"{path} already holds files edlib gather did not put there (e.g. {min(foreign)}); "
                "gather into a new folder so nothing of yours is overwritten"
            )
    return target


def _write_atomic(dest: Path, data: bytes) -> None:
    """Write `data` to `dest` through a hidden temporary file renamed over it; the file
    gets the usual permissions (the umask's), as a file the user saved would."""
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def place_bytes(folder: Path, name: str, data: bytes, caption: str) -> None:
    """Write a downloaded image `name` and its caption `.txt`."""
    folder.mkdir(parents=True, exist_ok=True)
    _write_atomic(folder / (Path(name).stem + ".txt"), (caption + "\n").encode("utf-8"))
    _write_atomic(folder / name, data)


def place_file(folder: Path, name: str, source: Path, caption: SourceCaption, *, link: bool) -> None:
    """Copy (or symlink) a source image as `name`, with its caption; the source is only
    read, never moved or changed."""
    folder.mkdir(parents=True, exist_ok=True)
    stem = Path(name).stem
    if caption.yaml is not None:
        _write_atomic(folder / (stem + caption.yaml_suffix), caption.yaml)
    else:
        _write_atomic(folder / (stem + ".txt"), ((caption.text or "") + "\n").encode("utf-8"))
    dest = folder / name
    tmp = folder / f".{name}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        if link:
            os.symlink(source.absolute(), tmp)
        else:
            shutil.copyfile(source, tmp)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_leftovers(folder: Path, names: list[str], keep: set[str]) -> list[str]:
    """Remove the images (and their captions) of `names` that are not in `keep`: files an
    interrupted run wrote but never recorded as kept. Also clears stale temporary files."""
    removed = []
    for name in names:
        if name in keep:
            continue
        stem = Path(name).stem
        for candidate in [name, *(stem + s for s in _CAPTION_SUFFIXES)]:
            p = folder / candidate
            if p.is_file() or p.is_symlink():
                p.unlink()
                removed.append(candidate)
    if folder.is_dir():
        for entry in os.scandir(folder):
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                os.unlink(entry.path)
    return removed


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
