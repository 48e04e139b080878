"""Notebook panel for preservation mixing: pick the preservation folder, say how much of it
each epoch should hold, and see the multiplier, the mix per epoch and how long it takes
until every preservation image has been shown. The numbers come from
`edlib.data.preservation`; Save writes the folder's multiply.txt with undo history."""

from __future__ import annotations

import html
from pathlib import Path, PurePosixPath

import ipywidgets as widgets
import plotly.graph_objects as go

from edlib.data.folder_files import format_value
from edlib.data.numbers import format_count, format_share
from edlib.data.preservation import (
    Coverage,
    EpochMix,
    amount_as_shown,
    coverage,
    expected_mix,
    mix_per_epoch,
    preservation_multiplier,
)
from edlib.data.scan import scan
from edlib.data.schedule import DEFAULT_SEED
from edlib.data.types import DataRootError, ScanResult
from edlib.widgets.charts import panel_layout, show_figure
from edlib.widgets.common import (
    error_text,
    folder_label,
    ok_text,
    undo_writes,
    widget_bundle,
    write_multipliers,
)

MODES = {
    "per_epoch": "images per epoch",
    "fraction": "fraction of the folder",
    "share": "share of the epoch",
}
_PRESERVATION_HINTS = ("preserv", "ground", "reg", "class", "laion", "ffhq")
_PRESERVATION_COLOUR = "#e07b39"
_OTHER_COLOURS = ("#3b7dd8", "#79a9e8", "#1f4f99", "#a9c6ef", "#5c8fd6")


def guess_preservation_folder(scan_result: ScanResult) -> str:
    """A folder whose name says preservation (preservation, ground_truth, reg, ...), else
    the folder with the most images: preservation sets are usually the largest."""
    for f in scan_result.folders:
        name = PurePosixPath(f.path).name.lower() if f.path else ""
        if any(h in name for h in _PRESERVATION_HINTS):
            return f.path
    return max(scan_result.folders, key=lambda f: f.images).path


def mix_figure(mix: EpochMix, folder: str) -> go.Figure:
    """Stacked bars: samples per folder in each epoch, the preservation folder on top."""
    epochs = list(range(1, len(mix.samples) + 1))
    order = [i for i, p in enumerate(mix.folders) if p != folder] + [mix.folders.index(folder)]
    fig = go.Figure()
    for rank, i in enumerate(order):
        preserve = mix.folders[i] == folder
        fig.add_bar(
            x=epochs,
            y=mix.samples[:, i].tolist(),
            name=folder_label(mix.folders[i])
            + (" (preservation)" if preserve and "preserv" not in mix.folders[i] else ""),
            marker_color=_PRESERVATION_COLOUR if preserve else _OTHER_COLOURS[rank % len(_OTHER_COLOURS)],
        )
    return panel_layout(
        fig, "samples per epoch, by folder", height=300, legend_y=-0.25, barmode="stack", xaxis_title="epoch", yaxis_title="samples"
    )


def coverage_figure(cov: Coverage) -> go.Figure:
    """Fraction of the preservation images shown at least once, realised and expected."""
    epochs = list(range(1, len(cov.seen) + 1))
    fig = go.Figure()
    fig.add_scatter(
        x=epochs, y=cov.seen, mode="lines", name="realised (the run's draws)", line_color=_PRESERVATION_COLOUR
    )
    fig.add_scatter(
        x=epochs, y=cov.expected, mode="lines", name="expected 1-(1-f)^E", line={"color": "#555", "dash": "dash"}
    )
    if cov.epochs_to_all is not None:
        fig.add_vline(x=cov.epochs_to_all, line_dash="dot", line_color="#1b7f3b")
    return panel_layout(
        fig, "preservation images shown at least once", height=300, legend_y=-0.25,
        xaxis_title="epochs", yaxis={"title": "fraction shown", "tickformat": ".0%", "range": [0, 1.02]},
    )  # fmt: skip


class PreservationPanel:
    """Choose how much of the preservation folder each epoch holds; see the multiplier,
    the mix per epoch and the coverage over epochs; Save writes multiply.txt (undoable)."""

    def __init__(
        self,
        root: str | Path,
        *,
        folder: str | None = None,
        seed: int = DEFAULT_SEED,
        epochs_shown: int = 10,
        max_epochs: int = 2000,
    ):
        self.root = Path(root)
        self.seed = seed
        self.epochs_shown = epochs_shown
        self.max_epochs = max_epochs
        self.scan = scan(self.root)
        self.text: str | None = None  # the multiply.txt value the current choice gives
        self.coverage: Coverage | None = None
        self.mix: EpochMix | None = None

        start = folder if folder is not None else guess_preservation_folder(self.scan)
        self.scan.folder(start)  # KeyError naming the folder and the data root
        self.folder = widgets.Dropdown(
            options=[(f"{folder_label(f.path)} ({f.images} images)", f.path) for f in self.scan.folders],
            value=start,
            description="folder",
        )
        self.mode = widgets.ToggleButtons(options=[(label, key) for key, label in MODES.items()], value="fraction")
        self.mode.style.button_width = "175px"  # "fraction of the folder" in full
        self.amount = widgets.BoundedFloatText(value=0.0, min=0.0, max=1e9, step=0.01, description="amount")
        self.result = widgets.HTML()
        self.result.add_class("edlib-preservation-result")
        self.mix_chart = widgets.Output()
        self.coverage_chart = widgets.Output()
        self.save_button = widgets.Button(description="Save multiply.txt", button_style="primary", icon="save")
        self.undo_button = widgets.Button(description="Undo last save", icon="undo")
        self.status = widgets.HTML()
        self.widget = widgets.VBox(
            [
                widgets.HBox([self.folder, self.amount]),
                self.mode,
                self.result,
                widgets.HBox([self.mix_chart, self.coverage_chart]),
                widgets.HBox([self.save_button, self.undo_button]),
                self.status,
            ]
        )
        self._set_amount_from_file()
        self.folder.observe(self._folder_changed, names="value")
        self.mode.observe(self._mode_changed, names="value")
        self.amount.observe(self._update, names="value")
        self.save_button.on_click(self.save)
        self.undo_button.on_click(self.undo)
        self._update()

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    def _amount_for(self, mode: str, text: str) -> float:
        """The amount in `mode` that gives multiplier `text`: switching modes keeps the mix."""
        mix = expected_mix(self.scan, self.folder.value, text)
        return {"per_epoch": float(mix.per_epoch), "fraction": float(mix.multiply), "share": mix.share}[mode]

    def _set_amount_from_file(self) -> None:
        current = self.scan.folder(self.folder.value).settings.multiply
        self.amount.value = amount_as_shown(self._amount_for(self.mode.value, format_value(current)))

    def _folder_changed(self, _change) -> None:
        self._set_amount_from_file()
        self._update()

    def _mode_changed(self, change) -> None:
        if self.text is not None:
            self.amount.value = amount_as_shown(self._amount_for(change["new"], self.text))
        self._update()

    def _update(self, _change=None) -> None:
        folder = self.folder.value
        try:
            self.text = preservation_multiplier(self.scan, folder, **{self.mode.value: self.amount.value})
        except ValueError as e:
            self.text = None
            self.result.value = error_text(e)
            self.save_button.disabled = True
            return
        mix = expected_mix(self.scan, folder, self.text)
        self.coverage = coverage(self.scan, folder, self.text, seed=self.seed, max_epochs=self.max_epochs)
        self.mix = mix_per_epoch(self.scan, folder, self.text, epochs=self.epochs_shown, seed=self.seed)
        if self.coverage.epochs_to_all is not None:
            covered = f"every image shown at least once after <b>{self.coverage.epochs_to_all}</b> epoch(s)"
        else:
            covered = f"not every image is shown within {self.max_epochs} epochs"
        current = self.scan.folder(folder).settings.multiply
        self.result.value = (
            f"<div style='margin:6px 0;line-height:1.6'>multiply.txt for <b>{html.escape(folder_label(folder))}</b>: "
            f"<b style='font-size:1.15em'>{self.text}</b> (now {format_value(current)}) &middot; "
            f"{format_count(mix.per_epoch)} of {mix.images} images per epoch, "
            f"<b>{format_share(mix.share)}</b> of an epoch of {format_count(mix.per_epoch + mix.others_per_epoch)} "
            f"samples &middot; {covered}</div>"
        )
        self.save_button.disabled = mix.multiply == current  # nothing new to write
        show_figure(self.mix_chart, mix_figure(self.mix, folder))
        show_figure(self.coverage_chart, coverage_figure(self.coverage))

    def save(self, _button=None) -> Path | None:
        """Write the chosen multiplier to the preservation folder's multiply.txt."""
        if self.text is None:
            return None
        try:
            entry = write_multipliers(self.scan, {self.folder.value: self.text})
        except (DataRootError, OSError) as e:
            self.status.value = error_text(e)
            return None
        self.scan = scan(self.root)
        where = PurePosixPath(self.folder.value, "multiply.txt")
        self.status.value = ok_text(f"wrote {where} = {self.text} (Undo puts back the previous file)")
        self._update()
        return entry

    def undo(self, _button=None) -> list[str]:
        return undo_writes(self.root, self.status, self._rescan)

    def _rescan(self) -> None:
        self.scan = scan(self.root)
        self._update()
