"""Notebook panels for a data root: the folder table with editable multipliers and a live
preview (`DatasetPanel`), and target-share balancing from a weight tree (`BalancePanel`).

Every number shown comes from `edlib.data.scan`, `edlib.data.preview` and
`edlib.data.balance`; the panels only gather input and lay results out. Writing goes
through the balance history, so every Save and Apply can be undone.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path, PurePosixPath

import ipywidgets as widgets
import plotly.graph_objects as go

from edlib.data.balance import (
    BalancePlan,
    apply_balance,
    format_plan,
    plan_balance,
    starting_weights,
)
from edlib.data.buckets import resolution_problem
from edlib.data.folder_files import format_value
from edlib.data.numbers import format_count, format_share
from edlib.data.preview import Preview, preview
from edlib.data.scan import scan
from edlib.data.schedule import DEFAULT_SEED
from edlib.data.types import DataRootError, ScanResult
from edlib.widgets.charts import show_figure
from edlib.widgets.common import (
    THUMBNAIL_PX,
    error_text,
    folder_label,
    folder_thumbnails,
    message_list,
    ok_text,
    parse_multiplier,
    undo_writes,
    widget_bundle,
    with_multipliers,
    write_multipliers,
)

_COLUMNS = ("folder", "images", "multiply", "loss_scale", "per epoch", "share", "examples")
_GRID_COLUMNS = "minmax(110px, 1.4fr) 60px 90px 76px 84px 150px minmax(120px, 2fr)"
_BAD_BORDER = "2px solid #b00020"


def _cell(text: str, *, bold: bool = False, align: str = "left") -> widgets.HTML:
    weight = "font-weight:600;" if bold else ""
    return widgets.HTML(f"<div style='text-align:{align};{weight}'>{text}</div>")


def _share_bar(share: float) -> str:
    pct = 100 * share
    return (
        "<div style='display:flex;align-items:center;gap:6px'>"
        f"<div style='width:80px;height:10px;background:#e8e8e8;border-radius:2px'>"
        f"<div style='width:{min(pct, 100):.1f}%;height:10px;background:#3b7dd8;border-radius:2px'></div></div>"
        f"<span>{format_share(share)}</span></div>"
    )


@dataclass
class FolderRow:
    """The widgets of one folder's row; `multiply` is the editable value."""

    folder: str
    multiply: widgets.Text
    per_epoch: widgets.HTML
    share: widgets.HTML


class DatasetPanel:
    """The folders of a data root as a table: images, multiplier (editable), loss_scale,
    expected samples per epoch, share of the epoch and a few thumbnails, with the scan's
    warnings and errors above it.

    Editing a multiplier updates the preview at once (nothing is written); Save writes
    the edited folders' multiply.txt (undoable), Undo puts back the files of the last
    save or balance. Display it by leaving it as the last expression of a cell."""

    def __init__(
        self,
        root: str | Path,
        *,
        batch_size: int = 4,
        resolution: int = 512,
        seed: int = DEFAULT_SEED,
        thumbnails: int = 4,
        on_change: Callable[[], None] | None = None,
    ):
        self.root = Path(root)
        self.on_change = on_change  # called after Save and Undo (e.g. a BalancePanel's refresh)
        self.seed = seed
        self.thumbnails = thumbnails
        self.scan: ScanResult | None = None
        self.rows: dict[str, FolderRow] = {}
        self.preview: Preview | None = None

        self.batch_size = widgets.BoundedIntText(
            value=batch_size, min=1, max=4096, description="batch size", layout=widgets.Layout(width="170px")
        )
        # The run's base resolution: it decides the aspect buckets, hence the steps of an epoch.
        self.resolution_field = widgets.BoundedIntText(
            value=resolution, min=64, max=8192, step=64, description="resolution", layout=widgets.Layout(width="170px")
        )
        self.save_button = widgets.Button(description="Save multiply.txt", button_style="primary", icon="save")
        self.undo_button = widgets.Button(description="Undo last save", icon="undo")
        self.rescan_button = widgets.Button(description="Rescan", icon="refresh")
        for w, name in ((self.save_button, "save"), (self.undo_button, "undo"), (self.rescan_button, "rescan")):
            w.add_class(f"edlib-{name}")
        self.summary = widgets.HTML()
        self.summary.add_class("edlib-summary")
        self.messages = widgets.HTML()
        self.status = widgets.HTML()
        self.status.add_class("edlib-status")
        self.table = widgets.GridBox(
            layout=widgets.Layout(grid_template_columns=_GRID_COLUMNS, grid_gap="4px 10px", align_items="center")
        )
        self.widget = widgets.VBox(
            [
                self.messages,
                self.table,
                self.summary,
                widgets.HBox([self.batch_size, self.resolution_field, self.save_button, self.undo_button, self.rescan_button]),
                self.status,
            ],
            layout=widgets.Layout(max_width="1100px"),
        )
        self.batch_size.observe(self._update, names="value")
        self.resolution_field.observe(self._update, names="value")
        self.save_button.on_click(self.save)
        self.undo_button.on_click(self.undo)
        self.rescan_button.on_click(lambda _: self.rescan())
        self.rescan()

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    # ---- reading ------------------------------------------------------------------------

    def rescan(self) -> None:
        """Scan the data root again and rebuild the table (edits not saved are dropped)."""
        try:
            self.scan = scan(self.root)
        except DataRootError as e:
            self.scan, self.rows, self.preview = None, {}, None
            self.table.children = ()
            self.messages.value = ""
            self.summary.value = ""
            self.status.value = error_text(e)
            return
        self.messages.value = message_list("errors", self.scan.errors, "#b00020") + message_list(
            "warnings", self.scan.warnings, "#b36b00"
        )
        header = [_cell(f"<b>{c}</b>", align="left" if c in ("folder", "examples") else "right") for c in _COLUMNS]
        cells: list[widgets.Widget] = list(header)
        self.rows = {}
        for i, f in enumerate(self.scan.folders):
            multiply = widgets.Text(
                value=format_value(f.settings.multiply), continuous_update=True, layout=widgets.Layout(width="84px")
            )
            multiply.add_class(f"edlib-multiply-{i}")
            multiply.observe(self._update, names="value")
            row = FolderRow(f.path, multiply, _cell("", align="right"), _cell(""))
            row.per_epoch.add_class(f"edlib-per-epoch-{i}")
            self.rows[f.path] = row
            thumbs = [
                widgets.Image(value=png, format="png", layout=widgets.Layout(width=f"{THUMBNAIL_PX}px", height="auto"))
                for png in folder_thumbnails(self.scan, f.path, self.thumbnails)
            ]
            cells += [
                _cell(html.escape(folder_label(f.path)), bold=True),
                _cell(str(f.images), align="right"),
                multiply,
                _cell(format_value(f.settings.loss_scale), align="right"),
                row.per_epoch,
                row.share,
                widgets.HBox(thumbs, layout=widgets.Layout(grid_gap="4px")),
            ]
        self.table.children = cells
        self._update()

    @property
    def resolution(self) -> int:
        return self.resolution_field.value

    def set_plan(self, *, batch_size: int, resolution: int, seed: int) -> None:
        """Preview with another run's settings (the training form's), keeping any edits."""
        unchanged = (self.resolution_field.value, self.batch_size.value) == (resolution, batch_size)
        self.seed = seed
        self.resolution_field.value = resolution  # observed: updates the preview
        self.batch_size.value = batch_size
        if unchanged:
            self._update()

    def edits(self) -> tuple[dict[str, str], dict[str, str]]:
        """(edited, invalid): folder -> typed text for values that differ from the files,
        and folder -> error message for values that are not a valid multiplier."""
        edited, invalid = {}, {}
        for f in self.scan.folders if self.scan else []:
            text = self.rows[f.path].multiply.value.strip()
            try:
                value = parse_multiplier(text, f.path)
            except DataRootError as e:
                invalid[f.path] = str(e)
                continue
            if value != f.settings.multiply:
                edited[f.path] = text
        return edited, invalid

    # ---- the live preview -----------------------------------------------------------------

    def _update(self, _change=None) -> None:
        if self.scan is None:
            return
        edited, invalid = self.edits()
        problem = resolution_problem(self.resolution)
        self.resolution_field.layout.border = _BAD_BORDER if problem else ""
        if problem:
            self.status.value = error_text(Exception(f"resolution {self.resolution}: {problem}"))
            self.save_button.disabled = True
            return
        planned = with_multipliers(self.scan, {p: Fraction(t) for p, t in edited.items()})
        self.preview = preview(planned, batch_size=self.batch_size.value, resolution=self.resolution, seed=self.seed)
        for f in self.preview.folders:
            row = self.rows[f.path]
            row.multiply.layout.border = _BAD_BORDER if f.path in invalid else ""
            changed = f.path in edited
            per_epoch = format_count(f.expected_per_epoch)
            row.per_epoch.value = (
                f"<div style='text-align:right'>{'<b>' + per_epoch + '</b>' if changed else per_epoch}</div>"
            )
            row.share.value = _share_bar(f.share)
        p = self.preview
        self.summary.value = (
            f"<div style='margin:6px 0'>Epoch: <b>{format_count(p.epoch_size)}</b> expected samples &middot; "
            f"<b>{p.steps_per_epoch}</b> steps per epoch at batch size {p.batch_size} "
            f"(resolution {self.resolution})"
            + (f" &middot; <b>{len(edited)}</b> unsaved change(s)" if edited else "")
            + "</div>"
            + message_list("preview notes", p.warnings, "#555")
        )
        self.save_button.disabled = bool(invalid) or not edited
        if invalid:
            self.status.value = error_text(Exception("; ".join(invalid.values())))
        elif self.status.value.startswith("<span style='color:#b00020'>"):
            self.status.value = ""

    # ---- writing ------------------------------------------------------------------------

    def save(self, _button=None) -> Path | None:
        """Write multiply.txt for every edited folder; returns the history entry."""
        edited, invalid = self.edits()
        if invalid or not edited:
            self.status.value = error_text(Exception("; ".join(invalid.values()) or "nothing changed to save"))
            return None
        try:
            entry = write_multipliers(self.scan, edited)
        except (DataRootError, OSError) as e:
            self.status.value = error_text(e)
            return None
        self.rescan()
        self._notify()
        written = ", ".join(f"{PurePosixPath(p, 'multiply.txt')!s} = {t}" for p, t in sorted(edited.items()))
        self.status.value = ok_text(f"wrote {written} (Undo puts back the previous files)")
        return entry

    def undo(self, _button=None) -> list[str]:
        """Undo the newest save (or balance apply) of this data root."""
        return undo_writes(self.root, self.status, lambda: (self.rescan(), self._notify()))

    def _notify(self) -> None:
        if self.on_change is not None:
            self.on_change()


# ---- balancing from a weight tree ---------------------------------------------------------


def weight_nodes(scan: ScanResult) -> list[str]:
    """The nodes of a data root's weight tree, parents before children: every folder on
    the way to a folder holding images, plus `FOLDER/.` for the direct images of a folder
    that also has subfolders (they compete with its subfolders as one more sibling)."""
    image_folders = [f.path for f in scan.folders]
    nodes = {_own_node(p, image_folders) for p in image_folders}
    for p in image_folders:
        parts = _parts(p)
        nodes.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    return sorted(nodes, key=_parts)


def _parts(node: str) -> tuple[str, ...]:
    """A node's path parts; not PurePosixPath, which drops the "." of `FOLDER/.`."""
    return tuple(node.split("/")) if node else ()


def _own_node(folder: str, image_folders: list[str]) -> str:
    """The weight-tree node of a folder's direct images (balance.py's naming)."""
    prefix = f"{folder}/" if folder else ""
    has_subfolders = any(p != folder and p.startswith(prefix) for p in image_folders)
    if not has_subfolders:
        return folder
    return f"{folder}/." if folder else "."


def _node_name(node: str) -> str:
    if node == "":
        return "data root"
    last = node.rsplit("/", 1)[-1]
    return "(own images)" if last == "." else last


def _parent(node: str) -> str:
    return node.rsplit("/", 1)[0] if "/" in node else ""


def share_figure(plan: BalancePlan) -> go.Figure:
    """A sunburst of the plan's shares: rings are folder levels, leaves the folders'
    images (a folder's own images show as "(own images)" beside its subfolders)."""
    image_folders = [e.path for e in plan.entries]
    leaves = {_own_node(e.path, image_folders): float(e.share) for e in plan.entries}
    nodes = {""}
    for leaf in leaves:
        parts = _parts(leaf)
        nodes.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
    ids = sorted(nodes, key=_parts)
    fig = go.Figure(
        go.Sunburst(
            ids=[n or "<root>" for n in ids],
            labels=[_node_name(n) for n in ids],
            parents=["" if n == "" else (_parent(n) or "<root>") for n in ids],
            values=[leaves.get(n, 0.0) for n in ids],
            branchvalues="remainder",
            texttemplate="%{label}<br>%{customdata:.1%}",
            customdata=[_subtree_share(n, leaves) for n in ids],
            hovertemplate="%{label}: %{customdata:.2%} of the epoch<extra></extra>",
        )
    )
    fig.update_layout(margin={"t": 10, "l": 10, "r": 10, "b": 10}, height=360, width=420)
    return fig


def _subtree_share(node: str, leaves: dict[str, float]) -> float:
    if node == "":
        return sum(leaves.values())
    return sum(v for k, v in leaves.items() if k == node or k.startswith(node + "/"))


class BalancePanel:
    """Target shares from a weight tree: a weight per folder (siblings' weights become
    shares of their parent's share), an optional epoch size, the planned multipliers and a
    sunburst of the shares. Apply writes multiply.txt (undoable); `on_change` is called
    after Apply or Undo (the notebook passes the DatasetPanel's rescan)."""

    def __init__(
        self,
        root: str | Path,
        *,
        weights: dict[str, float] | None = None,
        on_change: Callable[[], None] | None = None,
    ):
        self.root = Path(root)
        self.scan = scan(self.root)
        start = weights or {}
        unknown = set(start) - set(weight_nodes(self.scan))
        if unknown:
            raise KeyError(f"weights name no folder of the weight tree of {self.root}: {sorted(unknown)}")
        self.on_change = on_change
        self.plan: BalancePlan | None = None
        self.weights: dict[str, widgets.BoundedFloatText] = {}
        rows = []
        # A folder excluded now (exclude.txt) starts at 0, so Apply keeps it excluded unless changed.
        starting = starting_weights(self.scan)
        for node in weight_nodes(self.scan):
            depth = len(_parts(node)) - 1
            box = widgets.BoundedFloatText(
                value=start.get(node, starting[node]), min=0.0, max=1e6, step=0.1,
                layout=widgets.Layout(width="90px"),
            )
            box.observe(self._update, names="value")
            self.weights[node] = box
            label = widgets.HTML(f"<div style='padding-left:{16 * depth}px'>{html.escape(_node_name(node))}</div>")
            rows.append(widgets.HBox([widgets.Box([label], layout=widgets.Layout(width="200px")), box]))
        self.epoch_size = widgets.BoundedFloatText(
            value=0.0, min=0.0, max=1e9, description="epoch size", layout=widgets.Layout(width="200px")
        )
        self.epoch_size.observe(self._update, names="value")
        self.apply_button = widgets.Button(
            description="Apply (write multiply.txt)", button_style="warning", layout=widgets.Layout(width="220px"),
            tooltip="writes multiply.txt, and exclude.txt where the weight is 0 (Undo puts back the old files)",
        )
        self.undo_button = widgets.Button(description="Undo", icon="undo")
        self.apply_button.on_click(self.apply)
        self.undo_button.on_click(self.undo)
        self.table = widgets.HTML()
        self.chart = widgets.Output()
        self.status = widgets.HTML()
        form = widgets.VBox(
            [
                widgets.HTML("<b>weight per folder</b> (0 excludes; siblings share their parent's share)"),
                *rows,
                self.epoch_size,
                widgets.HTML("<small>epoch size 0 keeps the current expected epoch size</small>"),
                # The plan under the weights, beside the chart: no gap under a short form.
                self.table,
                widgets.HBox([self.apply_button, self.undo_button]),
                self.status,
            ],
            layout=widgets.Layout(min_width="330px"),
        )
        self.widget = widgets.HBox([form, self.chart], layout=widgets.Layout(grid_gap="16px"))
        self._update()

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    def weight_values(self) -> dict[str, float]:
        return {node: box.value for node, box in self.weights.items()}

    def _update(self, _change=None) -> None:
        try:
            self.plan = plan_balance(self.scan, self.weight_values(), epoch_size=self.epoch_size.value or None)
        except DataRootError as e:
            self.plan = None
            self.status.value = error_text(e)
            self.apply_button.disabled = True
            return
        self.status.value = ""
        self.apply_button.disabled = False
        self.table.value = f"<pre style='font-size:12px;line-height:1.3'>{html.escape(format_plan(self.plan))}</pre>"
        show_figure(self.chart, share_figure(self.plan))

    def apply(self, _button=None) -> Path | None:
        if self.plan is None:
            return None
        try:
            entry = apply_balance(self.plan)
        except (DataRootError, OSError) as e:
            self.status.value = error_text(e)
            return None
        self._changed()
        excluded = len(self.plan.excluded)
        wrote = f"{len(self.plan.entries) - excluded} multiply.txt file(s)" + (
            f", exclude.txt in {excluded} excluded folder(s)" if excluded else ""
        )
        self.status.value = ok_text(f"wrote {wrote}; Undo puts back the old files")
        return entry

    def undo(self, _button=None) -> list[str]:
        return undo_writes(self.root, self.status, self._changed)

    def refresh(self) -> None:
        """Re-plan against the multiply.txt files as they are now (after a Save elsewhere)."""
        self.scan = scan(self.root)
        self._update()

    def _changed(self) -> None:
        """Re-plan against the files as now written, and tell the table to rescan."""
        self.refresh()
        if self.on_change is not None:
            self.on_change()
