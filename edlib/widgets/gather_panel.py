"""Notebook panel for gathering a preservation set: choose a source (a URL list or a folder
of images), how many images and how many of them per epoch, press Gather; a progress bar
runs while it works, then the report, thumbnails of what came in and the new mix of an
epoch. The work is `edlib.gather.gather`; this panel only collects the inputs and shows
what it returns."""

from __future__ import annotations

import html
from dataclasses import replace
from pathlib import Path

import ipywidgets as widgets
from IPython.display import display

from edlib.data.images import ImageReadError
from edlib.data.preservation import EpochMix, mix_per_epoch
from edlib.data.scan import scan
from edlib.gather import GatherOptions, format_report, gather, gathered_files
from edlib.gather.report import GatherReport
from edlib.widgets.common import THUMBNAIL_PX, error_text, thumbnail_png, widget_bundle
from edlib.widgets.preservation_panel import MODES, mix_figure
from edlib.world import write_data_root


def demo_gather_pool(path: str | Path, *, count: int = 120, seed: int = 7) -> Path:
    """A folder of generated toy-world images (64 px, with captions) to gather from in the
    demo, written once; an existing one is reused."""
    path = Path(path)
    if not (path.is_dir() and any(path.iterdir())):
        write_data_root(path, {"photos": {"count": count}}, seed=seed, size=64)
    return path


class GatherPanel:
    """Gather ground-truth images into a folder of the data root, and see the result."""

    def __init__(
        self,
        root: str | Path,
        *,
        source: str | Path = "",
        folder: str = "ground_truth",
        count: int = 500,
        per_epoch: float = 50.0,
        resolution: int = 512,
        thumbnails: int = 16,
        epochs_shown: int = 10,
        options: GatherOptions | None = None,
    ):
        self.root = Path(root)
        self.options = options or GatherOptions()
        self.thumbnails = thumbnails
        self.epochs_shown = epochs_shown
        self.report: GatherReport | None = None
        self.mix: EpochMix | None = None  # the epoch mix shown after the last gather
        wide = widgets.Layout(width="640px")
        self.source = widgets.Text(
            value=str(source),
            description="source",
            placeholder="a URL list (.parquet .csv .tsv .jsonl) or a folder of images",
            layout=wide,
        )
        self.folder = widgets.Text(value=folder, description="into folder")
        self.count = widgets.BoundedIntText(value=count, min=1, max=10_000_000, description="images")
        self.resolution = widgets.BoundedIntText(value=resolution, min=8, max=8192, step=64, description="resolution")
        self.mode = widgets.ToggleButtons(options=[(label, key) for key, label in MODES.items()], value="per_epoch")
        self.mode.style.button_width = "175px"  # "fraction of the folder" in full
        self.amount = widgets.BoundedFloatText(value=per_epoch, min=0.0, max=1e9, step=1.0, description="amount")
        self.gather_button = widgets.Button(description="Gather", button_style="primary", icon="download")
        self.progress = widgets.Output()
        self.result = widgets.HTML()
        self.result.add_class("edlib-gather-result")
        self.thumbs = widgets.Box(layout=widgets.Layout(display="flex", flex_flow="row wrap", grid_gap="4px"))
        self.mix_chart = widgets.Output()
        self.widget = widgets.VBox(
            [
                self.source,
                widgets.HBox([self.folder, self.count, self.resolution]),
                widgets.HBox([self.mode, self.amount]),
                self.gather_button,
                self.progress,
                self.result,
                self.thumbs,
                self.mix_chart,
            ]
        )
        self.gather_button.on_click(self.run)

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    def run(self, _button=None) -> GatherReport | None:
        """Gather with the panel's values; shows and returns the report (None on an error,
        which is shown instead). Running again continues or adds to the same folder."""
        if not self.source.value.strip():
            self.result.value = error_text(ValueError("choose a source: a URL list or a folder of images"))
            return None
        amount = {self.mode.value: self.amount.value} if self.amount.value > 0 else {}
        options = replace(self.options, resolution=self.resolution.value)
        self.gather_button.disabled = True
        self.result.value = "gathering..."
        try:
            with self.progress:
                self.progress.clear_output()
                report = gather(self.root, self.source.value.strip(), self.folder.value.strip(), count=self.count.value, options=options, **amount)
        except (ValueError, OSError) as e:
            self.result.value = error_text(e)
            return None
        except KeyboardInterrupt:
            self.result.value = error_text(RuntimeError("stopped; what came in is kept, press Gather to continue"))
            return None
        finally:
            self.gather_button.disabled = False
        self.report = report
        self.result.value = f"<pre style='line-height:1.3'>{html.escape(format_report(report))}</pre>"
        self._show(report)
        return report

    def _show(self, report: GatherReport) -> None:
        files = gathered_files(self.root, report.folder)[-self.thumbnails :]
        images = []
        for path in files:
            try:
                png = thumbnail_png(path)
            except ImageReadError:
                continue
            images.append(widgets.Image(value=png, format="png", layout=widgets.Layout(width=f"{THUMBNAIL_PX}px", height="auto")))
        self.thumbs.children = images
        with self.mix_chart:
            self.mix_chart.clear_output(wait=True)
            if report.kept:
                self.mix = mix_per_epoch(scan(self.root), report.folder, report.multiply or "1", epochs=self.epochs_shown)
                display(mix_figure(self.mix, report.folder))
