"""The images an epoch was planned with, saved with each checkpoint, so a run resumed in
the middle of an epoch finishes the epoch that was planned.

An epoch's schedule indexes the scan's images, so it depends on exactly which images the
scan held. If an image was quarantined or deleted (or one added) while a run was stopped
mid-epoch, a fresh scan at resume holds a different list, and the rest of the epoch would
be a different one: not the exact resume DESIGN.md promises. So a checkpoint also keeps
the epoch's image list (path, folder, size, caption) and its folders' schedule-shaping
settings; on resume the epoch is rebuilt from them. Images that are gone stay in the list
and are skipped when their turn comes (`edlib.train.unreadable`), as they would have been
had the run not stopped; images added wait for the next epoch.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from typing import Any

from edlib.data.types import Caption, FolderInfo, FolderSettings, ImageItem, ImageOwn, ScanResult, Tag


def epoch_items(data: ScanResult) -> list[list[Any]]:
    """The epoch's images as plain lists (weights_only-loadable): path, folder, width,
    height, main prompt, tags as [text, weight], trigger."""
    return [
        [it.path, it.folder, it.width, it.height, it.caption.main_prompt,
         [[t.text, t.weight] for t in it.caption.tags], it.caption.trigger]
        for it in data.items
    ]


# Per-image settings (from an image's own EveryDream2 .yaml) saved with the folder's.
_IMAGE_KEYS = ("multiply", "loss_scale")


def folder_settings(data: ScanResult) -> dict[str, dict[str, Any]]:
    """The settings that shape an epoch's schedule and loss (multiply, loss_scale, flip_p,
    batch_id), as saved in a checkpoint; under "images", the images whose own .yaml sidecar
    sets multiply or loss_scale (read when a run starts and kept for the whole run, so a
    resumed run keeps them too)."""
    out: dict[str, dict[str, Any]] = {
        f.path: {
            "multiply": str(f.settings.multiply),
            "loss_scale": f.settings.loss_scale,
            "flip_p": f.settings.flip_p,
            "batch_id": f.settings.batch_id,
            "images": {},
        }
        for f in data.folders
    }
    for item in data.items:
        own = {k: v for k, v in (item.own.settings if item.own is not None else ()) if k in _IMAGE_KEYS}
        if own and item.folder in out:
            out[item.folder]["images"][item.path] = {k: str(v) if k == "multiply" else v for k, v in own.items()}
    return out


def restore_epoch(data: ScanResult, settings: dict[str, dict[str, Any]], items: list[list[Any]] | None) -> ScanResult:
    """`data` (a fresh scan) turned back into the scan the saved epoch was planned with:
    its image list (`items`; fresh captions for images still there) and its folders'
    saved settings. Checkpoints from before image lists were saved give None: then only
    the settings are restored."""
    if items is not None:
        fresh = {it.path: it for it in data.items}
        data = replace(data, items=[_item(row, fresh.get(row[0])) for row in items])
    present = {f.path: f for f in data.folders}
    counts: dict[str, int] = {}
    for it in data.items:
        counts[it.folder] = counts.get(it.folder, 0) + 1
    folders = []
    for path in sorted(counts):
        info = present.get(path) or FolderInfo(path, 0, FolderSettings())
        saved = settings.get(path)
        if saved is not None:
            changes = {"multiply": Fraction(saved["multiply"]), "loss_scale": saved["loss_scale"]}
            changes.update({k: saved[k] for k in ("flip_p", "batch_id") if k in saved})
            info = replace(info, settings=info.settings.with_(**changes))
        folders.append(replace(info, images=counts[path]))
    items = [_with_saved_image(item, settings.get(item.folder)) for item in data.items]
    return replace(data, folders=folders, items=items)


def _with_saved_image(item: ImageItem, saved_folder: dict[str, Any] | None) -> ImageItem:
    """An image with the per-image multiply / loss_scale its run saved (checkpoints from
    before per-image settings have no "images" and leave it as it is)."""
    if saved_folder is None or "images" not in saved_folder:
        return item
    values = saved_folder["images"].get(item.path, {})
    own = item.own if item.own is not None else ImageOwn()
    kept = [(k, v) for k, v in own.settings if k not in _IMAGE_KEYS]
    restored = [(k, Fraction(v) if k == "multiply" else v) for k, v in values.items()]
    if item.own is None and not restored:
        return item
    return replace(item, own=replace(own, settings=tuple(kept + restored)))


def _item(row: list[Any], fresh: ImageItem | None) -> ImageItem:
    path, folder, width, height, main, tags, trigger = row
    caption = fresh.caption if fresh is not None else Caption(main, tuple(Tag(t, w) for t, w in tags), trigger)
    return ImageItem(path, folder, width, height, caption)
