"""Helpers shared by the notebook panels: the demo data root, checked multiplier text,
writing multipliers with undo history, thumbnails and small HTML pieces.

Only `thumbnail_png` and the HTML helpers are about display; the rest is plain library
code that a script can call too.
"""

from __future__ import annotations

import html
import io
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

from PIL import Image

from edlib.data.balance import BalanceEntry, BalancePlan, apply_balance, undo_balance
from edlib.data.folder_files import parse_setting
from edlib.data.images import ImageReadError, load_rgb
from edlib.data.types import DataRootError, ScanResult
from edlib.world import write_data_root
from edlib.world.demo_data import DEMO_SPEC

THUMBNAIL_PX = 56


def demo_data_root(path: str | Path, *, seed: int = 0) -> Path:
    """The demo data root at `path`, written (64 px toy-world images) if the folder is
    missing or empty; an existing one is reused so re-running a notebook cell is cheap."""
    path = Path(path)
    if not (path.is_dir() and any(path.iterdir())):
        write_data_root(path, DEMO_SPEC, seed=seed, size=64)
    return path


def parse_multiplier(text: str, folder: str) -> Fraction:
    """A multiplier typed by a user, checked by the same rules as a multiply.txt file.

    Raises `DataRootError` naming the folder and the text found."""
    where = f"{folder}/multiply.txt" if folder else "multiply.txt"
    return parse_setting("multiply", text, where)


def with_multipliers(scan: ScanResult, multipliers: dict[str, Fraction]) -> ScanResult:
    """A copy of `scan` whose folders use `multipliers` (folder path -> value) where given:
    what the data root will be once they are written, without touching any file."""
    unknown = set(multipliers) - {f.path for f in scan.folders}
    if unknown:
        raise KeyError(f"no folder(s) {sorted(unknown)} with images under {scan.root}")
    folders = [
        replace(f, settings=f.settings.with_(multiply=multipliers[f.path])) if f.path in multipliers else f
        for f in scan.folders
    ]
    return replace(scan, folders=folders)


def write_multipliers(scan: ScanResult, texts: dict[str, str]) -> Path:
    """Write `multiply.txt` into each folder of `texts` (folder path -> value text).

    Goes through `apply_balance`, so the previous files are kept in the data root's balance
    history and `edlib.data.balance.undo_balance(root)` puts them back. Every value is
    checked before anything is written. Returns the history entry."""
    if not texts:
        raise ValueError("no multipliers to write")
    images = {f.path: f.images for f in scan.folders}
    current = {f.path: f.settings.multiply for f in scan.folders}
    entries = []
    for folder, text in sorted(texts.items()):
        if folder not in images:
            raise KeyError(f"no folder {folder!r} with images under {scan.root}")
        value = parse_multiplier(text, folder)
        source = scan.folder(folder).sources.get("multiply", "")
        if source.endswith(("local.yaml", "local.yml")):
            raise ValueError(
                f"{source} sets multiply, which wins over multiply.txt (EveryDream2's order): "
                f"change it there, or remove the multiply line there first"
            )
        # The share of a hand-written value is not a balancing target; apply_balance only
        # reads the path and the text, the share is kept for a faithful history record.
        entries.append(BalanceEntry(folder, images[folder], current[folder], Fraction(0), value, text.strip()))
    return apply_balance(BalancePlan(root=Path(scan.root), epoch_size=Fraction(0), entries=entries))


def thumbnail_png(path: str | Path, px: int = THUMBNAIL_PX) -> bytes:
    """A small PNG of an image as training sees it (EXIF-rotated, transparency on white)."""
    image = load_rgb(path)
    image.thumbnail((px, px), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def folder_thumbnails(scan: ScanResult, folder: str, count: int) -> list[bytes]:
    """Thumbnails of the first `count` readable images of `folder` (sorted by path)."""
    out = []
    for item in scan.items:
        if len(out) == count:
            break
        if item.folder == folder:
            try:
                out.append(thumbnail_png(Path(scan.root) / item.path))
            except ImageReadError:
                continue  # changed since the scan; the scan's report names broken files
    return out


def message_list(title: str, messages: list[str], colour: str) -> str:
    """An HTML list of messages under a coloured title; empty when there are none."""
    if not messages:
        return ""
    items = "".join(f"<li>{html.escape(m)}</li>" for m in messages)
    return (
        f"<div style='border-left:4px solid {colour};padding:2px 8px;margin:4px 0'>"
        f"<b style='color:{colour}'>{html.escape(title)} ({len(messages)})</b>"
        f"<ul style='margin:2px 0 2px 16px;padding:0'>{items}</ul></div>"
    )


def undo_writes(root: str | Path, status, refresh) -> list[str]:
    """Undo the newest Save or Apply of `root` (the balance history every panel writes
    through), then `refresh()` the panel and report in `status` (an HTML widget). Returns
    what was restored; [] when the undo is refused, with the reason shown."""
    try:
        done = undo_balance(root)
    except DataRootError as e:
        status.value = error_text(e)
        return []
    refresh()
    status.value = ok_text("undone: " + "; ".join(done))
    return done


def error_text(error: Exception) -> str:
    """A short HTML line for an error shown in a panel's status line."""
    return f"<span style='color:#b00020'>{html.escape(str(error))}</span>"


def ok_text(text: str) -> str:
    return f"<span style='color:#1b7f3b'>{html.escape(text)}</span>"


def widget_bundle(widget, **kwargs) -> dict:
    """What `display(widget)` sends, for a panel's own `_repr_mimebundle_`. ipywidgets 8 has
    the method; 7.7.1 (Colab's, which must stay) only `_ipython_display_`, whose bundle and
    "displayed" bookkeeping this repeats."""
    if hasattr(widget, "_repr_mimebundle_"):
        return widget._repr_mimebundle_(**kwargs)
    plain = repr(widget)
    bundle = {"text/plain": plain[:110] + "…" if len(plain) > 110 else plain}
    if widget._view_name is not None:
        bundle["application/vnd.jupyter.widget-view+json"] = {"version_major": 2, "version_minor": 0, "model_id": widget._model_id}
        widget._handle_displayed()  # 7.7.1's callbacks take no include/exclude
    return bundle


def folder_label(folder: str) -> str:
    """How a folder is named in the panels: the data root itself is "." as in the CLI."""
    return folder or "."
