"""Reports of a scan: the JSON object of `edlib scan --json` and the terminal table."""

from __future__ import annotations

from edlib.data.folder_files import format_value
from edlib.data.types import ScanResult


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
                "main_prompt": f.settings.main_prompt,
                "tags": [{"tag": t.text, "weight": t.weight} for t in f.settings.tags],
                "sources": dict(f.sources),
            }
            for f in result.folders
        ],
        "images": len(result.items),
        "images_with_own_settings": sum(1 for it in result.items if it.own is not None and it.own.settings),
        "everydream2": list(result.everydream2),
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
    if result.everydream2:
        lines += ["", "EveryDream2 features used (docs/DESIGN.md says what edlib does with each):"]
        lines += [f"  {line}" for line in result.everydream2]
    for title, entries in (("warnings", result.warnings), ("errors", result.errors)):
        if entries:
            lines += ["", f"{title} ({len(entries)}):", *(f"  {e}" for e in entries)]
    if result.skipped:
        lines += ["", f"skipped {len(result.skipped)} file(s) that are not usable images (listed in the warnings)"]
    return "\n".join(lines)
