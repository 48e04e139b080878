"""Which images are held out of training for the validation loss, chosen without torch so
the preview can show the split before any model loads.

A fraction of each folder is held out, chosen per folder by a hash of (seed, path): the
same images are held out on every run with that seed, and adding or editing other folders
never changes a folder's choice.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from edlib.data.types import ScanResult


def _rank(seed: int, path: str) -> int:
    """A stable pseudo-random number per (seed, image): the hold-out order, and the seed of
    the image's fixed validation noise."""
    return int.from_bytes(hashlib.sha256(f"edlib-validation:{seed}:{path}".encode()).digest()[:8], "little")


def split_validation(data: ScanResult, fraction: float, seed: int) -> tuple[ScanResult, ScanResult]:
    """(train, validation) scans: from each folder of n images, round(fraction * n) are
    held out (never all of them: a folder keeps at least one training image), the ones
    whose hash of (seed, path) ranks lowest."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_fraction: must be in [0, 1), got {fraction}")
    by_folder: dict[str, list[int]] = {}
    for index, item in enumerate(data.items):
        by_folder.setdefault(item.folder, []).append(index)
    held: set[int] = set()
    for indices in by_folder.values():
        count = min(int(fraction * len(indices) + 0.5), len(indices) - 1)
        held.update(sorted(indices, key=lambda i: _rank(seed, data.items[i].path))[:count])
    train = [item for i, item in enumerate(data.items) if i not in held]
    val = [item for i, item in enumerate(data.items) if i in held]
    return _subset(data, train), _subset(data, val)


def _subset(data: ScanResult, items: list) -> ScanResult:
    """`data` restricted to `items`, folder image counts updated, empty folders dropped."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.folder] = counts.get(item.folder, 0) + 1
    folders = [replace(f, images=counts[f.path]) for f in data.folders if counts.get(f.path)]
    return ScanResult(data.root, folders, items, list(data.warnings), list(data.errors), list(data.skipped))


def describe_split(train: ScanResult, val: ScanResult) -> str:
    """What was held out, per folder, for the preview: "folder: k of n held out (a.png, ...)"."""
    lines = []
    for folder in val.folders:
        names = [item.path for item in val.items if item.folder == folder.path]
        total = folder.images + sum(1 for item in train.items if item.folder == folder.path)
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        lines.append(f"{folder.path or '.'}: {folder.images} of {total} held out for validation ({shown})")
    return "\n".join(lines) if lines else "no images held out for validation"
