"""The training panel's live view of a run: progress, the loss chart, the live time and
cost, the latest samples, and the images the run finds hardest with a Quarantine button each.

Events arrive on the training thread: the view only assigns widget values there (which
ipywidgets sends to the browser from any thread) and replaces output lists wholesale, never
capturing output with `with output:`, which is tied to the cell that is running.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from edlib.model.estimate import TimeEstimate, format_duration, refine_time
from edlib.train.loss_tracker import MIN_OBSERVATIONS, ImageStats, hardest_images
from edlib.train.run_dir import Event, RunDir
from edlib.widgets.charts import panel_layout, show_figure
from edlib.widgets.common import thumbnail_png
from edlib.widgets.training_form import STYLE, WIDE

CHART_SECONDS = 1.0  # redraw the loss chart at most this often: a chart per step would flood the browser


def loss_figure(steps: list[int], losses: list[float], *, max_points: int = 2000) -> go.Figure:
    """Training loss per optimizer step with a running mean (single steps are noisy: the
    loss depends mostly on the timestep drawn). Long runs are thinned to about `max_points`
    points so a redraw stays cheap in the browser; the mean is over every step."""
    window = 20
    sums = np.concatenate([[0.0], np.cumsum(losses)])
    ends = np.arange(1, len(losses) + 1)
    starts = np.maximum(ends - window, 0)
    mean = (sums[ends] - sums[starts]) / (ends - starts)
    stride = max(1, -(-len(steps) // max_points))
    fig = go.Figure()
    fig.add_scatter(x=steps[::stride], y=losses[::stride], mode="markers", marker={"size": 4, "color": "#a9c6ef"}, name="loss")
    fig.add_scatter(x=steps[::stride], y=mean[::stride].tolist(), mode="lines", line_color="#1f4f99", name=f"mean of last {window}")
    return panel_layout(fig, "training loss", height=260, legend_y=-0.3, xaxis_title="optimizer step", yaxis_title="loss")


class LiveView:
    """What a run shows while it trains. `loss_steps`/`losses` are the chart's data and
    `recent` the last steps' metrics (for the live estimate); `on_quarantine(path)` is called
    by a review row's button."""

    def __init__(self, data_root: Path, *, review_top: int, on_quarantine: Callable[[str], Any]):
        self.data_root = data_root
        self.review_top = review_top
        self.on_quarantine = on_quarantine
        self.loss_steps: list[int] = []
        self.losses: list[float] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=21)
        self.sample_path: Path | None = None
        self._chart_drawn = 0.0
        self._lock = threading.Lock()

        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="step 0", style=STYLE, layout=WIDE)
        self.live = widgets.HTML()
        self.loss_chart = widgets.Output()
        # Hidden until the first sample: an empty image shows as a broken-image icon. A fixed
        # width keeps the chart beside it; a 64 px toy grid would otherwise be blown up.
        self.sample_image = widgets.Image(format="png", layout={"width": "320px", "height": "auto", "display": "none"})
        self.sample_label = widgets.HTML("<i>samples appear here (set sample_prompts)</i>")
        self.review_box = widgets.VBox()
        self.review_button = widgets.Button(description="Refresh review", icon="refresh")
        self.widget = widgets.VBox(
            [
                self.progress,
                self.live,
                widgets.HBox([self.loss_chart, widgets.VBox([self.sample_label, self.sample_image])]),
                widgets.HBox([widgets.HTML("<b>Images the run finds hardest</b>"), self.review_button]),
                self.review_box,
            ]
        )
        for widget, name in ((self.progress, "progress"), (self.live, "live"), (self.loss_chart, "loss-chart")):
            widget.add_class(f"edlib-{name}")

    def reset(self, total_steps: int) -> None:
        """Empty the view for a new run of about `total_steps` steps."""
        with self._lock:
            self.loss_steps, self.losses = [], []
            self.recent.clear()
        self.progress.value, self.progress.max = 0, max(total_steps, 1)

    def show_event(self, event: Event, *, estimate: TimeEstimate | None, run_dir: Path) -> None:
        """Show what `event` changes in the live view (other kinds are the panel's)."""
        data = event.data
        if event.kind == "start":
            self.progress.max = max(data["total_steps"], 1)
            self.progress.value = data["step"]
            if data["step"] > 0:  # resumed: the chart shows the run from its first step
                self.load_history(run_dir, data["step"])
        elif event.kind == "step":
            with self._lock:
                self.loss_steps.append(data["step"])
                self.losses.append(data["loss"])
                self.recent.append(data)
            self.progress.value = min(data["step"], self.progress.max)
            self.progress.description = f"step {data['step']} / {self.progress.max}"
            self.show_metrics(data, estimate)
            if time.monotonic() - self._chart_drawn >= CHART_SECONDS:
                self.draw_loss_chart()
        elif event.kind == "epoch":
            self.progress.max = max(data["total_steps"], 1)  # re-counted when multipliers changed
        elif event.kind == "sample":
            self.sample_path = Path(data["path"])
            self.sample_image.value = self.sample_path.read_bytes()
            self.sample_image.layout.display = None
            where = _relative(self.sample_path, run_dir)
            self.sample_label.value = f"samples at step {data['step']}: <code>{html.escape(where)}</code>"
        elif event.kind in ("done", "error"):
            self.draw_loss_chart()
            with self._lock:
                last = self.recent[-1] if self.recent else None
            if last is not None:
                self.show_metrics(last, estimate, running=False)  # no ETA once it is over

    def load_history(self, run_dir: Path, up_to_step: int) -> None:
        """The loss of every step up to `up_to_step` from the run's metrics.jsonl (a resumed
        run's earlier sessions), so its chart shows the whole run."""
        earlier = [m for m in RunDir(run_dir, writer=False).read_metrics() if m.get("step", 0) <= up_to_step]
        with self._lock:
            self.loss_steps = [m["step"] for m in earlier] + self.loss_steps
            self.losses = [m["loss"] for m in earlier] + self.losses
        self.draw_loss_chart()

    def show_metrics(self, metrics: dict[str, Any], estimate: TimeEstimate | None, *, running: bool = True) -> None:
        """Progress line with one rate and one remaining time, and the cost estimate redone with
        this run's measured images/s. The time left is the measured rate's once there is one (the
        median of the last steps, as the cost line uses), the loop's own ETA before."""
        live = None
        if estimate is not None:
            with self._lock:
                recent = list(self.recent)
            refined = refine_time(estimate, recent)  # the first of these is skipped as warm-up
            live = refined if refined is not estimate else None
        # One rate and one time left: the measured median once there is one, the step's own before.
        left = live.remaining_s if live is not None else metrics["eta_s"]
        rate = live.throughput.images_per_s if live is not None else metrics["images_per_s"]
        line = (
            f"{'' if running else 'last step: '}loss {metrics['loss']:.4f} &middot; lr {metrics['lr']:.3g} &middot; "
            f"{rate:.3g} images/s"
            + (f" &middot; <b>{format_duration(left)} left</b>" if running else "")
        )
        if live is not None:
            line += (
                f"<br><span style='color:#666'>at that rate the whole run takes {format_duration(live.seconds)}, "
                f"about ${live.cost:.2f} at ${live.price_per_hour:g}/h</span>"
            )
        self.live.value = line

    def draw_loss_chart(self) -> None:
        with self._lock:
            steps, losses = list(self.loss_steps), list(self.losses)
        self._chart_drawn = time.monotonic()
        if steps:
            show_figure(self.loss_chart, loss_figure(steps, losses))

    def show_review(self, stats: Sequence[ImageStats], *, min_observations: int = MIN_OBSERVATIONS) -> None:
        """The `review_top` hardest images of `stats` (`RunHandle.image_losses`): enough
        observations, loss above expectation, flagged first (`hardest_images`), each with a
        Quarantine button; before there are any, why not."""
        ranked = hardest_images((s for s in stats if (self.data_root / s.path).is_file()), min_observations=min_observations)
        rows = [self._review_row(s) for s in ranked.images[: self.review_top]]
        if not rows:
            rows = [widgets.HTML(f"<i>{html.escape(ranked.message())}</i>")]
        self.review_box.children = rows

    def _review_row(self, s: ImageStats) -> widgets.HBox:
        button = widgets.Button(description="Quarantine", icon="ban", layout={"width": "120px"})
        button.on_click(lambda _b, path=s.path: self.on_quarantine(path))
        flag = "<b style='color:#b00020'>flagged</b> " if s.flagged else ""
        label = widgets.HTML(
            f"{flag}<code>{html.escape(s.path)}</code><br>mean z {s.mean:+.2f} over {s.observations} "
            f"observations ({s.score:.1f} standard errors above the typical image)"
        )
        thumb = widgets.Image(value=thumbnail_png(self.data_root / s.path), format="png")
        return widgets.HBox([thumb, label, button], layout={"align_items": "center"})


def _relative(path: Path, folder: Path) -> str:
    """`path` as seen from `folder` when it is inside it (shorter to read), else in full."""
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)
