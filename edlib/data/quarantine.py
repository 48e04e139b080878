"""Quarantine images a user chose (e.g. from a run's review) and restore them.

`quarantine` moves chosen images, with their caption and sidecar files (every suffix the
scan reads captions from, in any letter case), to `DATA_ROOT/_quarantine/<same relative
path>` and records each move in `DATA_ROOT/_quarantine/manifest.json` (what, from where,
when, why); `restore` moves them back. Nothing is ever deleted or overwritten: a move whose
destination exists is refused before any file moves, and so is a move of a file that a
symlinked folder places outside the data root. A running training skips a quarantined image
for the rest of its epoch (with a warning) and drops it from the next one, because the
trainer re-reads the data root between epochs and drops images that vanished.
(`edlib.train.review` adds a run's loss statistics to the record.)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any

from edlib.data.captions import CAPTION_SUFFIXES
from edlib.data.scan_guards import is_inside
from edlib.data.types import IMAGE_EXTENSIONS, QUARANTINE_DIR

QUARANTINE = QUARANTINE_DIR
MANIFEST = "manifest.json"
# Files that belong to an image and travel with it: its captions (DESIGN.md "Data root semantics").
SIDECAR_SUFFIXES = CAPTION_SUFFIXES



def _relative(rel_path: str) -> PurePosixPath:
    """A data-root-relative POSIX path, refused if it could point outside the root."""
    rel = PurePosixPath(str(rel_path).replace("\\", "/"))
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise ValueError(f"{rel_path!r}: give a path relative to the data root, without '..'")
    return rel


def _companions(root: Path, rel: PurePosixPath) -> list[PurePosixPath]:
    """The image and its caption/sidecar files that exist, image first. Matched as the scan
    matches them: same stem, a caption suffix in any case (`img.TXT` is a caption too)."""
    stem = rel.stem
    sidecars = sorted(
        rel.parent / p.name
        for p in (root / rel.parent).iterdir()
        if p.suffix.lower() in SIDECAR_SUFFIXES and p.name[: -len(p.suffix)] == stem and p.is_file()
    )
    return [rel, *sidecars]


def _check_inside(root: Path, rel_path: str, rel: PurePosixPath) -> None:
    """Refuse an image whose folder is reached through a symlink leading outside the data
    root: moving it would move a file that is not in the data root."""
    folder = os.path.realpath(root / rel.parent)
    if not is_inside(folder, os.path.realpath(root)):
        raise ValueError(
            f"{rel_path}: its folder is a symbolic link to {folder}, outside the data root; quarantine only "
            "moves files inside the data root (remove the link, or move the file yourself)"
        )


def _read_manifest(quarantine_dir: Path) -> list[dict[str, Any]]:
    file = quarantine_dir / MANIFEST
    if not file.exists():
        return []
    try:
        return json.loads(file.read_text(encoding="utf-8"))["entries"]
    except (ValueError, KeyError) as error:
        raise ValueError(f"{file}: unreadable quarantine manifest ({error}); fix or move it away") from None


def _write_manifest(quarantine_dir: Path, entries: list[dict[str, Any]]) -> None:
    file = quarantine_dir / MANIFEST
    tmp = quarantine_dir / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"entries": entries}, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(file)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _why(run_dir: str | Path | None, reason: str | None) -> dict[str, Any]:
    """The reason recorded with a move: the user's words and, with a run, its statistics."""
    why: dict[str, Any] = {"reason": reason or ("high loss in review" if run_dir else "chosen by the user")}
    if run_dir is not None:
        why["run"] = str(Path(run_dir).resolve())
    return why


def quarantine(
    data_root: str | Path,
    rel_paths: list[str],
    *,
    run_dir: str | Path | None = None,
    reason: str | None = None,
    stats: Mapping[str, Mapping[str, Any]] | None = None,
) -> Path:
    """Move images (relative paths) and their caption files into
    DATA_ROOT/_quarantine/<same relative path>; returns the quarantine folder.

    Every path is checked first (it is an image in the data root, not already quarantined,
    and nothing at the destination would be overwritten); if any check fails, nothing moves.
    `run_dir` (the run whose review chose them) and `stats` (image -> its loss statistics)
    are recorded in the manifest."""
    root = Path(data_root)
    qdir = root / QUARANTINE
    stats = stats or {}
    moved_before = {e["image"]: e for e in _read_manifest(qdir) if "restored" not in e}
    plans = []
    for rel_path in dict.fromkeys(rel_paths):  # the same path twice moves once
        rel = _relative(rel_path)
        if rel.parts[0] == QUARANTINE:
            raise ValueError(f"{rel_path}: is already in {QUARANTINE}/")
        if rel.suffix.lower() not in IMAGE_EXTENSIONS:
            raise ValueError(f"{rel_path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        if any(rel == planned for planned, _ in plans):
            continue  # `a/x.png` and `./a/x.png`
        if not (root / rel).is_file() and str(rel) in moved_before:
            raise ValueError(
                f"{rel_path}: is already in the quarantine (moved {moved_before[str(rel)]['when']}); "
                f"restore it with --restore {rel}"
            )
        if not (root / rel).is_file():
            raise FileNotFoundError(f"{root / rel}: no such image in the data root")
        _check_inside(root, rel_path, rel)
        files = _companions(root, rel)
        for f in files:
            if (qdir / f).exists():
                raise FileExistsError(f"{qdir / f}: already exists in the quarantine; refusing to overwrite it")
        plans.append((rel, files))

    entries = _read_manifest(qdir)
    why = _why(run_dir, reason)
    for rel, files in plans:
        for f in files:
            (qdir / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(root / f, qdir / f)
        entry = {"image": str(rel), "files": [str(f) for f in files], "from": str(root.resolve()), "when": _now(), **why}
        if str(rel) in stats:
            entry["stats"] = dict(stats[str(rel)])
        entries.append(entry)
        _write_manifest(qdir, entries)  # after each image: the manifest matches the files even if interrupted
    return qdir


def quarantined(data_root: str | Path) -> list[str]:
    """Images currently in the quarantine (relative to the data root), per the manifest."""
    return [e["image"] for e in _read_manifest(Path(data_root) / QUARANTINE) if "restored" not in e]


def restore(data_root: str | Path, rel_paths: list[str] | None = None) -> list[str]:
    """Move quarantined images (all, or the chosen relative paths) and their files back to
    where they came from; returns the images restored. Refused, before anything moves, if
    a path is not quarantined or a file is back at the original place already."""
    root = Path(data_root)
    qdir = root / QUARANTINE
    entries = _read_manifest(qdir)
    current = {e["image"]: e for e in entries if "restored" not in e}
    wanted = list(current) if rel_paths is None else [str(_relative(p)) for p in rel_paths]
    for image in wanted:
        if image not in current:
            raise ValueError(f"{image}: not in the quarantine of {root} (see {qdir / MANIFEST})")
        for f in current[image]["files"]:
            if (root / f).exists():
                raise FileExistsError(f"{root / f}: exists again in the data root; refusing to overwrite it")
            if not (qdir / f).is_file():
                raise FileNotFoundError(f"{qdir / f}: listed in the manifest but missing from the quarantine")
    for image in wanted:
        entry = current[image]
        for f in entry["files"]:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            os.replace(qdir / f, root / f)
        entry["restored"] = _now()
        _write_manifest(qdir, entries)
    return wanted
