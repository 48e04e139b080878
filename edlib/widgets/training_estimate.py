"""The training panel's estimate: the planned run's steps and learning-rate curve
(`edlib.data.preview`), its memory, and its time and cost on the device picked
(`edlib.model.estimate`: the CPU or a GPU; by default the one a run started here trains on).
Redone from the form's config on every change."""

from __future__ import annotations

import html

import ipywidgets as widgets
import plotly.graph_objects as go

from edlib.data.preview import Preview
from edlib.data.types import ScanResult
from edlib.model.config import TrainConfig
from edlib.model.estimate import (
    CPU,
    DEVICES,
    TimeEstimate,
    estimate_memory,
    estimate_time,
    format_duration,
    format_gib,
)
from edlib.model.estimate_rows import local_device
from edlib.model.plan import preview_run
from edlib.widgets.charts import panel_layout, show_figure
from edlib.widgets.common import error_text
from edlib.widgets.training_form import STYLE


def lr_figure(p: Preview) -> go.Figure:
    """The learning rate at every optimizer step of the planned run."""
    fig = go.Figure()
    fig.add_scatter(x=list(range(1, len(p.lr) + 1)), y=p.lr, mode="lines", line_color="#3b7dd8", name="lr")
    return panel_layout(
        fig, f"learning rate over {p.total_steps} steps ({p.lr_scheduler})", height=260, left=60,
        xaxis_title="optimizer step", yaxis={"title": "learning rate", "exponentformat": "e", "rangemode": "tozero"},
    )  # fmt: skip


def _on(device: str) -> str:
    return "on this machine's CPU" if device == CPU else f"on a {device}"


class EstimateView:
    """The device and its price (`gpu`, `price`), the plan line (`plan`), the memory line
    (`memory`) and the LR chart (`lr_chart`); `preview` and `estimate` hold the last numbers.
    `gpu`: a key of `DEVICES`; None: the device a run started here trains on."""

    def __init__(self, gpu: str | None = None):
        gpu = gpu or local_device()
        self.gpu = widgets.Dropdown(options=list(DEVICES), value=gpu, description="device", style=STYLE, layout={"width": "420px"})
        self.price = widgets.BoundedFloatText(
            value=DEVICES[gpu].price_per_hour, min=0, max=1000, step=0.1, description="price per hour ($)", style=STYLE
        )
        self.plan = widgets.HTML()
        self.memory = widgets.HTML()
        self.lr_chart = widgets.Output()
        self.preview: Preview | None = None
        self.estimate: TimeEstimate | None = None
        # Registered before any observer of the panel's: a new GPU's price is in place when it re-plans.
        self.gpu.observe(lambda change: setattr(self.price, "value", DEVICES[change["new"]].price_per_hour), names="value")

    def show_error(self, error: Exception) -> None:
        self.plan.value = error_text(error)

    def update(self, scan: ScanResult, config: TrainConfig) -> None:
        """Re-plan `config` over `scan`: LR curve, memory, time and cost on the chosen GPU."""
        self.preview = preview_run(scan, config)
        show_figure(self.lr_chart, lr_figure(self.preview))
        device = self.gpu.value
        memory = estimate_memory(config, device=device)
        fits = "fits" if memory.fits(device) else "<b style='color:#b00020'>does not fit</b>"
        room = f"{DEVICES[device].memory_gib:.0f} GiB"
        self.memory.value = f"memory: {html.escape(memory.describe())}; {fits} {html.escape(_on(device))} ({room})"
        self.estimate = e = estimate_time(config, self.preview.total_steps, device, price_per_hour=self.price.value)
        self.plan.value = (
            f"<div style='line-height:1.6'><b>{e.steps}</b> optimizer steps ({self.preview.steps_per_epoch} per epoch) "
            f"&middot; {html.escape(_on(device))}: <b>{format_duration(e.seconds)}</b>, about <b>${e.cost:.2f}</b> "
            f"&middot; memory about {format_gib(memory.total_gib)} ({fits})<br>"
            f"<span style='color:#666;font-size:0.9em'>{html.escape(e.throughput.basis)}</span></div>"
        )
