"""Signatures of the user's own images, so a gathered set never holds a copy of one.

A preservation set that contains the subject being trained tells the model to "preserve"
exactly what it should learn, so downloads and draws are compared against every image of
the data root outside the gathered folder. Signatures are cached in the gathered folder's
hidden `.gather/` (by path, size and modification time): a rerun decodes only new or
changed images.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from edlib.data.types import ScanResult
from edlib.files import write_text_atomic
from edlib.gather.decide import workers
from edlib.gather.signature import DuplicateIndex, file_signature, from_json, to_json

TRAINING_LABEL = "training:"


def _inside(folder: str, parent: str) -> bool:
    return folder == parent or folder.startswith(parent + "/")


def training_images(result: ScanResult, gathered: str) -> list[str]:
    """The images of a scanned data root outside the folder `gathered` (relative paths)."""
    return [it.path for it in result.items if not _inside(it.folder, gathered)]


def training_index(
    root: Path, items: list[str], cache_file: Path, *, progress: Callable[[Iterable, int, str], Iterable] | None = None
) -> DuplicateIndex:
    """An index of the signatures of the images `items` (paths relative to `root`)."""
    cache = _load(cache_file)
    fresh: dict[str, list] = {}
    todo = []
    for rel in items:
        try:
            st = os.stat(root / rel)
        except OSError:
            continue
        key = [st.st_size, st.st_mtime_ns]
        hit = cache.get(rel)
        if hit and hit[:2] == key:
            fresh[rel] = hit
        else:
            todo.append((rel, key))

    def compute(job):
        rel, key = job
        try:
            sig = file_signature(root / rel)
        except Exception:  # noqa: BLE001 - the scan reports unreadable images; they cannot be copied either
            return rel, None
        return rel, [*key, to_json(sig)]

    if todo:
        with ThreadPoolExecutor(workers()) as pool:
            results = pool.map(compute, todo)
            if progress is not None:
                results = progress(results, len(todo), "signatures of your images")
            for rel, entry in results:
                if entry is not None:
                    fresh[rel] = entry
    if fresh != cache:
        write_text_atomic(cache_file, json.dumps(fresh))
    index = DuplicateIndex()
    for rel in sorted(fresh):
        index.add(from_json(fresh[rel][2]), TRAINING_LABEL + rel)
    return index


def _load(cache_file: Path) -> dict[str, list]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
