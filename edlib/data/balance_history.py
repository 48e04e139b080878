"""The balance history: every file balancing writes into a data root or takes out of it is
recorded first, so `undo_balance` can put the data root back as it was.

An entry is a folder DATA_ROOT/.edlib/balance_history/<UTC time>/ (the scanner skips
`.edlib`) holding `manifest.json` and, under `files/`, a copy of every file the change
replaced or removed. The manifest lists

- `written`: relative path -> the text written (multiply.txt values, exclude.txt notes);
- `created`: written paths that did not exist before (undo removes them);
- `replaced`: written paths that existed (undo copies them back from `files/`);
- `removed`: paths taken out, only ever an `exclude.txt` of a folder a balance includes
  again (undo copies them back from `files/`).

The copies are made and the manifest written before anything in the data root changes, so
an interrupted apply can still be undone; if that fails (a full disk), the entry is removed
and nothing changes. Only these paths are ever touched: images and captions never.
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from edlib.data.types import DataRootError
from edlib.files import copy_atomic, describe_write_error, write_text_atomic

HISTORY_DIR = PurePosixPath(".edlib", "balance_history")
MANIFEST = "manifest.json"


def record_and_apply(root: Path, written: dict[str, str], removed: list[str]) -> Path:
    """Write `written` (relative path -> text) and remove those of `removed` (relative paths)
    that exist (a broken link too) in the data root `root`, after recording both in a new
    history entry; returns the entry."""
    entry = _new_history_entry(root)
    try:
        manifest = _keep_previous(root, entry, written, removed)
    except OSError as error:
        shutil.rmtree(entry, ignore_errors=True)
        raise DataRootError(
            f"{root}: could not keep the previous multiply.txt and exclude.txt files ({describe_write_error(error, entry)}); "
            "nothing was written, free some space and apply again"
        ) from None
    done = 0
    total = len(written) + len(manifest["removed"])
    for rel, text in written.items():
        try:
            write_text_atomic(root / rel, text)
        except OSError as error:
            raise DataRootError(
                f"{root / rel}: could not write ({describe_write_error(error, root / rel)}); {done} of {total} "
                f"changes were made. Undo them with: edlib balance {root} --undo"
            ) from None
        done += 1
    for rel in manifest["removed"]:
        os.unlink(root / rel)  # a link is removed, never the file it points to
    return entry


def _keep_previous(root: Path, entry: Path, written: dict[str, str], removed: list[str]) -> dict:
    manifest = {"created": [], "replaced": [], "removed": [], "written": dict(written)}
    for rel in written:
        if (root / rel).exists():
            _backup(root, entry, rel)
            manifest["replaced"].append(rel)
        else:
            manifest["created"].append(rel)
    for rel in removed:
        if os.path.lexists(root / rel):
            _backup(root, entry, rel)
            manifest["removed"].append(rel)
    write_text_atomic(entry / MANIFEST, json.dumps(manifest, indent=2))
    return manifest


def _backup(root: Path, entry: Path, rel: str) -> None:
    backup = entry / "files" / rel
    backup.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / rel, backup)


def undo_balance(root, *, force: bool = False) -> list[str]:
    """Undo the newest apply: restore the files it replaced or removed, remove the ones it
    created, drop its history entry. Returns one line per file touched.

    A file changed since the apply (someone edited it, or made again one it removed) is not
    overwritten unless `force`: undo never destroys an edit it did not make.
    """
    root = Path(root)
    history = root / HISTORY_DIR
    entries = sorted(p for p in history.iterdir() if (p / MANIFEST).is_file()) if history.is_dir() else []
    if not entries:
        raise DataRootError(f"{root}: no balance history to undo (looked in {history})")
    entry = entries[-1]
    manifest = json.loads((entry / MANIFEST).read_text(encoding="utf-8"))
    removed = manifest.get("removed", [])  # entries written before exclude.txt existed have none
    if not force:
        edited = [
            rel
            for rel, text in manifest["written"].items()
            if (root / rel).exists() and (root / rel).read_text(encoding="utf-8") != text
        ]
        edited += [rel for rel in removed if os.path.lexists(root / rel)]
        if edited:
            raise DataRootError(
                f"{root}: changed since the balance was applied, not undoing: {', '.join(edited)}. "
                f"To restore the older files anyway: edlib balance {root} --undo --force "
                "(from Python: undo_balance(root, force=True))"
            )
    done = []
    for rel in manifest["replaced"]:
        copy_atomic(entry / "files" / rel, root / rel)  # through a symlink: the link stays
        done.append(f"restored {rel}")
    for rel in removed:
        copy_atomic(entry / "files" / rel, root / rel)
        done.append(f"restored {rel} (the balance had removed it)")
    for rel in manifest["created"]:
        if (root / rel).exists():
            (root / rel).unlink()
            done.append(f"removed {rel} (it did not exist before)")
    shutil.rmtree(entry)
    return done


def _new_history_entry(root: Path) -> Path:
    history = root / HISTORY_DIR
    history.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S_%fZ")
    entry = history / stamp
    n = 1
    while entry.exists():  # two applies within a microsecond: keep both, in order
        entry = history / f"{stamp}-{n}"
        n += 1
    entry.mkdir()
    return entry
