"""Reports of a scan: the JSON object of `edlib scan --json` and the terminal table."""

from __future__ import annotations

from edlib.data.folder_files import format_multiplier, format_value
from edlib.data.types import ScanResult

# Example captions per folder in the terminal report (`edlib scan --captions N`), and the
# characters shown of each: enough to check the captions read as meant, not a dump.
CAPTION_EXAMPLES = 3
_CAPTION_WIDTH = 120


def report_json(result: ScanResult) -> dict:
    """The scan as one JSON-able object (what `edlib scan --json` prints), every image's
    caption included (as trained without tag shuffling; `edlib caption` explains it)."""
    return {
        "folders": [
            {
                "path": f.path,
                "images": f.images,
                "multiply": float(f.settings.multiply),
                "excluded": f.settings.exclude,
                "loss_scale": f.settings.loss_scale,
                "trigger": f.settings.trigger,
                "flip_p": f.settings.flip_p,
                "cond_dropout": f.settings.cond_dropout,
                "shuffle_tags": f.settings.shuffle_tags,
                "batch_id": f.settings.batch_id,
                "main_prompt": f.settings.main_prompt,
                "tags": [{"tag": t.text, "weight": t.weight} for t in f.settings.tags],
                "sources": dict(f.sources),
            }
            for f in result.folders
        ],
        "images": len(result.items),
        "excluded_images": sum(f.images for f in result.folders if f.settings.exclude),
        "images_with_own_settings": sum(1 for it in result.items if it.own is not None and it.own.settings),
        "items": [
            {"path": it.path, "folder": it.folder, "width": it.width, "height": it.height, "caption": it.caption.text()}
            for it in result.items
        ],
        "everydream2": list(result.everydream2),
        "warnings": list(result.warnings),
        "errors": list(result.errors),
    }


def format_report(result: ScanResult, *, captions: int = CAPTION_EXAMPLES) -> str:
    """The scan as a table for the terminal, `captions` example captions per folder, then
    warnings, errors and skipped files."""
    header = ("folder", "images", "multiply", "loss_scale", "flip_p", "trigger")
    rows = [
        (
            f.path or ".",
            str(f.images),
            format_multiplier(f.settings.multiply, f.settings.exclude),
            format_value(f.settings.loss_scale),
            format_value(f.settings.flip_p),
            f.settings.trigger or "",
        )
        for f in result.folders
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"data root {result.root}: {len(result.items)} images in {len(result.folders)} folders" + _excluded(result), ""]
    for row in [header, *rows]:
        cells = [cell.ljust(w) if i in (0, 5) else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    if captions > 0:
        lines += ["", f"captions (as trained, before tag shuffling; up to {captions} per folder; `edlib caption` explains one):"]
        lines += _caption_examples(result, captions)
    if result.everydream2:
        lines += ["", "EveryDream2 features used (docs/DESIGN.md says what edlib does with each):"]
        lines += [f"  {line}" for line in result.everydream2]
    for title, entries in (("warnings", result.warnings), ("errors", result.errors)):
        if entries:
            lines += ["", f"{title} ({len(entries)}):", *(f"  {e}" for e in entries)]
    if result.skipped:
        lines += ["", f"skipped {len(result.skipped)} file(s) that are not usable images (listed in the warnings)"]
    return "\n".join(lines)


def _excluded(result: ScanResult) -> str:
    excluded = [f for f in result.folders if f.settings.exclude]
    if not excluded:
        return ""
    images = sum(f.images for f in excluded)
    return f" ({images} images in {len(excluded)} folder(s) excluded by exclude.txt, not trained)"


def _caption_examples(result: ScanResult, per_folder: int) -> list[str]:
    """The first `per_folder` captions of each folder (items are sorted by path), each cut
    to one terminal line."""
    shown: dict[str, list[str]] = {}
    for item in result.items:
        examples = shown.setdefault(item.folder, [])
        if len(examples) < per_folder:
            text = item.caption.text()
            text = text if len(text) <= _CAPTION_WIDTH else text[: _CAPTION_WIDTH - 3] + "..."
            examples.append(f"    {item.path.rpartition('/')[2]}: {text or '(empty)'}")
    lines = []
    for folder in result.folders:
        lines.append(f"  {folder.path or '.'}" + (" (excluded)" if folder.settings.exclude else ""))
        lines += shown.get(folder.path, [])
    return lines
