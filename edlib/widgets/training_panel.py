"""Notebook panel for training: a config form, the run's estimated time and cost, and a
live view of the run (progress, loss, images/s, samples, images it cannot learn).

The form turns into a `TrainConfig` (`config_from_form`, plain library code); the numbers
come from `edlib.data.preview` (steps, LR curve) and `edlib.model.estimate` (memory, time, cost);
the run is `edlib.train.start`, steered through its handle. Multipliers are edited with the
data root's `DatasetPanel` (`multipliers_view`); the trainer re-reads multiply.txt at each
epoch boundary, so a Save mid-run shapes the next epoch. Events arrive on the training
thread: the panel only assigns widget values there (which ipywidgets sends to the browser
from any thread) and replaces output lists wholesale, never capturing output with
`with output:`, which is tied to the cell that is running.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import plotly.graph_objects as go

from edlib.data.preview import Preview
from edlib.data.scan import scan
from edlib.data.types import DataRootError, ScanResult
from edlib.model.checkpoint import list_checkpoints
from edlib.model.config import METHODS, OPTIMIZERS, ConfigError, TrainConfig
from edlib.model.estimate import (
    GPUS,
    REFERENCE_GPU,
    TimeEstimate,
    estimate_memory,
    estimate_time,
    format_duration,
    refine_time,
)
from edlib.model.lr import LR_SCHEDULERS
from edlib.model.plan import preview_run
from edlib.train.handle import RunHandle, start
from edlib.train.hooks import Plugin
from edlib.train.review import quarantine
from edlib.train.run_dir import Event
from edlib.widgets.common import error_text, ok_text, thumbnail_png
from edlib.widgets.dataset_panel import DatasetPanel

# Form fields where 0 means "off" (the config's null): a number box cannot hold "nothing".
OPTIONAL_COUNTS = (
    "max_steps",
    "save_every_n_steps",
    "save_every_n_epochs",
    "save_every_n_minutes",
    "keep_last_n_checkpoints",
    "sample_every_n_steps",
    "sample_every_n_epochs",
)
# Learning rates a newcomer should start from, per method (docs/methods.md).
METHOD_LRS = {"full": (1e-6, 0.0), "lora": (1e-4, 0.0), "textual_inversion": (0.0, 5e-3), "hypernetwork": (1e-5, 0.0)}
CHART_SECONDS = 1.0  # redraw the loss chart at most this often: a chart per step would flood the browser


def config_from_form(values: dict[str, Any]) -> TrainConfig:
    """A `TrainConfig` from the panel's form values (config keys, as the widgets hold them).

    The form's conventions become config values: 0 in `OPTIONAL_COUNTS` is null (off),
    `sample_prompts` is text with one prompt per line, and textual inversion's `token` /
    `init_word` become `placeholder_tokens`. Raises `ConfigError` naming each bad key."""
    config = dict(values)
    for key in OPTIONAL_COUNTS:
        if key in config and not config[key]:
            config[key] = None
    prompts = [line.strip() for line in str(config.pop("sample_prompts", "") or "").splitlines() if line.strip()]
    config["sample_prompts"] = prompts or None
    token, init_word = config.pop("token", ""), config.pop("init_word", "")
    if config.get("method") == "textual_inversion":
        config["placeholder_tokens"] = [{"token": token.strip(), "init_word": init_word.strip()}] if token.strip() else []
    return TrainConfig.from_dict(config)


def lr_figure(p: Preview) -> go.Figure:
    """The learning rate at every optimizer step of the planned run."""
    fig = go.Figure()
    fig.add_scatter(x=list(range(1, len(p.lr) + 1)), y=p.lr, mode="lines", line_color="#3b7dd8", name="lr")
    fig.update_layout(
        title={"text": f"learning rate over {p.total_steps} steps ({p.lr_scheduler})", "font_size": 14},
        xaxis_title="optimizer step",
        yaxis={"title": "learning rate", "exponentformat": "e", "rangemode": "tozero"},
        height=260,
        width=480,
        margin={"t": 40, "l": 60, "r": 10, "b": 40},
        modebar={"orientation": "v"},
    )
    return fig


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
    fig.update_layout(
        title={"text": "training loss", "font_size": 14},
        xaxis_title="optimizer step",
        yaxis_title="loss",
        height=260,
        width=480,
        margin={"t": 40, "l": 50, "r": 10, "b": 40},
        legend={"orientation": "h", "y": -0.3},
        modebar={"orientation": "v"},
    )
    return fig


def _show(output: widgets.Output, figure: go.Figure) -> None:
    """Put `figure` in `output` by replacing its outputs: safe from the training thread.
    The bundle is what `display(figure)` sends, in plotly's renderer for this front end."""
    data = {"text/plain": f"<plotly figure: {figure.layout.title.text}>", **figure._repr_mimebundle_()}
    output.outputs = ({"output_type": "display_data", "data": data, "metadata": {}},)


def _field(widget: widgets.Widget, help_text: str) -> widgets.HBox:
    return widgets.HBox([widget, widgets.HTML(f"<span style='color:#666;font-size:0.9em'>{html.escape(help_text)}</span>")])


class TrainingPanel:
    """Configure, estimate, start and watch a training run; see the module docstring.

    `values` overrides the form's starting values (config keys, e.g. `{"max_steps": 3}`);
    `plugins` go to `edlib.train.start` with every run (e.g. a loss tracker with other settings)."""

    def __init__(
        self,
        data_root: str | Path,
        model: str | Path,
        run_dir: str | Path,
        *,
        values: dict[str, Any] | None = None,
        gpu: str = REFERENCE_GPU,
        review_top: int = 8,
        plugins: Sequence[Plugin] = (),
    ):
        self.data_root = Path(data_root)
        self.plugins = list(plugins)
        self.review_top = review_top
        self.scan: ScanResult = scan(self.data_root)
        self.preview: Preview | None = None
        self.estimate: TimeEstimate | None = None
        self.handle: RunHandle | None = None
        self.loss_steps: list[int] = []  # the loss chart's data, filled from step events
        self.losses: list[float] = []
        self.recent: deque[dict[str, Any]] = deque(maxlen=21)  # the last steps' metrics, for the live estimate
        self.sample_path: Path | None = None
        self.epoch: int | None = None  # the epoch the run is in, from its events
        self.epoch_samples: dict[int, int] = {}  # samples each epoch of this panel's runs was planned with
        self.exports: list[Path] = []  # what the last run exported when it ended
        self._changed_for_epoch: int | None = None  # the first epoch that trains with a mid-run Save
        self._chart_drawn = 0.0
        self._lock = threading.Lock()

        defaults = TrainConfig.model_fields
        style = {"description_width": "200px"}  # the longest key, gradient_accumulation_steps, in full

        def number(key, cls=widgets.IntText, **kw):
            default = defaults[key].default
            return cls(value=default if default is not None else 0, description=key, style=style, **kw)

        self.fields: dict[str, widgets.ValueWidget] = {
            "model": widgets.Text(value=str(model), description="model", style=style, layout={"width": "520px"}),
            "run_dir": widgets.Text(value=str(run_dir), description="run_dir", style=style, layout={"width": "520px"}),
            "method": widgets.Dropdown(options=METHODS, value="full", description="method", style=style),
            "resolution": widgets.BoundedIntText(value=512, min=64, max=4096, step=64, description="resolution", style=style),
            "batch_size": widgets.BoundedIntText(value=4, min=1, max=1024, description="batch_size", style=style),
            "epochs": widgets.BoundedIntText(value=10, min=1, max=100000, description="epochs", style=style),
            "unet_lr": widgets.FloatText(value=1e-6, description="unet_lr", style=style),
            "text_encoder_lr": widgets.FloatText(value=0.0, description="text_encoder_lr", style=style),
            "lr_scheduler": widgets.Dropdown(options=LR_SCHEDULERS, value="constant", description="lr_scheduler", style=style),
            "lr_warmup_steps": number("lr_warmup_steps"),
            "optimizer": widgets.Dropdown(options=OPTIMIZERS, value="adamw", description="optimizer", style=style),
            "gradient_accumulation_steps": widgets.BoundedIntText(value=1, min=1, max=1024, description="gradient_accumulation_steps", style=style),
            "max_steps": number("max_steps"),
            "seed": number("seed"),
            "network_dim": number("network_dim"),
            "network_alpha": number("network_alpha", widgets.FloatText),
            "token": widgets.Text(value="<ohwx>", description="token", style=style),
            "init_word": widgets.Text(value="person", description="init_word", style=style),
            "mixed_precision": widgets.Dropdown(options=("no", "fp16", "bf16"), value=_default_precision(), description="mixed_precision", style=style),
            "gradient_checkpointing": widgets.Checkbox(value=False, description="gradient_checkpointing", style=style),
            "cache_latents": widgets.Dropdown(options=("no", "memory", "disk"), value="no", description="cache_latents", style=style),
            "cache_text_embeddings": widgets.Checkbox(value=False, description="cache_text_embeddings", style=style),
            "save_every_n_epochs": number("save_every_n_epochs"),
            "save_every_n_steps": number("save_every_n_steps"),
            "save_every_n_minutes": number("save_every_n_minutes", widgets.FloatText),
            "keep_last_n_checkpoints": number("keep_last_n_checkpoints"),
            "sample_prompts": widgets.Textarea(value="", description="sample_prompts", placeholder="one prompt per line", style=style, layout={"width": "520px"}),
            "sample_every_n_epochs": number("sample_every_n_epochs"),
            "sample_every_n_steps": number("sample_every_n_steps"),
        }
        for key, value in (values or {}).items():
            self.set(key, value)
        for key, widget in self.fields.items():
            widget.add_class(f"edlib-field-{key}")  # hooks for the browser test

        # Estimates.
        self.gpu = widgets.Dropdown(options=list(GPUS), value=gpu, description="GPU", style=style, layout={"width": "420px"})
        self.price = widgets.BoundedFloatText(value=GPUS[gpu].price_per_hour, min=0, max=1000, step=0.1, description="price per hour ($)", style=style)
        self.plan = widgets.HTML()
        self.memory = widgets.HTML()
        self.lr_chart = widgets.Output()

        # Steering.
        self.start_button = widgets.Button(description="Start", button_style="primary", icon="play")
        self.resume_button = widgets.Button(description="Resume", icon="repeat", tooltip="continue from the newest checkpoint in run_dir")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.save_button = widgets.Button(description="Save now", icon="save", disabled=True)
        self.sample_button = widgets.Button(description="Sample now", icon="image", disabled=True)
        self.status = widgets.HTML()

        # Live view.
        self.progress = widgets.IntProgress(value=0, min=0, max=1, description="step 0", style=style, layout={"width": "520px"})
        self.live = widgets.HTML()
        self.loss_chart = widgets.Output()
        # Hidden until the first sample: an empty image shows as a broken-image icon. A fixed
        # width keeps the chart beside it; a 64 px toy grid would otherwise be blown up.
        self.sample_image = widgets.Image(format="png", layout={"width": "320px", "height": "auto", "display": "none"})
        self.sample_label = widgets.HTML("<i>samples appear here (set sample_prompts)</i>")
        self.review_box = widgets.VBox()
        self.review_button = widgets.Button(description="Refresh review", icon="refresh")

        # Multipliers, editable while the run trains: the data root's folder table.
        self.multipliers = DatasetPanel(self.data_root, thumbnails=3, on_change=self._multipliers_saved)
        self.multipliers_note = widgets.HTML()
        self.multipliers_note.add_class("edlib-multipliers-note")
        self.multipliers_view = widgets.VBox(
            [
                widgets.HTML(
                    "<b>Multipliers</b> <span style='color:#666'>(saved values are used from the next epoch on; "
                    "the epoch in progress keeps its plan)</span>"
                ),
                self.multipliers.widget,
                self.multipliers_note,
            ]
        )

        f = self.fields
        sections = {
            "Method": [f["method"], f["network_dim"], f["network_alpha"], f["token"], f["init_word"]],
            "Learning rate and optimizer": [
                f["unet_lr"],
                _field(f["text_encoder_lr"], "0 keeps the text encoder frozen"),
                f["lr_scheduler"],
                f["lr_warmup_steps"],
                f["optimizer"],
                self.lr_chart,
            ],
            "Steps": [
                f["gradient_accumulation_steps"],
                _field(f["max_steps"], "0: run all epochs"),
                f["seed"],
            ],
            "Memory and speed": [
                f["mixed_precision"],
                f["gradient_checkpointing"],
                f["cache_latents"],
                f["cache_text_embeddings"],
                self.memory,
            ],
            "Saving and samples": [
                _field(f["save_every_n_epochs"], "0: off"),
                _field(f["save_every_n_steps"], "0: off"),
                _field(f["save_every_n_minutes"], "0: off; protects against a vanished GPU"),
                _field(f["keep_last_n_checkpoints"], "0: keep all"),
                f["sample_prompts"],
                _field(f["sample_every_n_epochs"], "0: off"),
                _field(f["sample_every_n_steps"], "0: off"),
            ],
        }
        advanced = widgets.Accordion(children=[widgets.VBox(children) for children in sections.values()])
        for i, title in enumerate(sections):
            advanced.set_title(i, title)
        advanced.selected_index = None
        self.widget = widgets.VBox(
            [
                widgets.HTML("<b>Training</b>"),
                f["model"],
                f["run_dir"],
                widgets.HBox([widgets.VBox([f["resolution"], f["batch_size"]]), widgets.VBox([f["epochs"], f["unet_lr"]])]),
                advanced,
                widgets.HTML("<b>Estimate</b>"),
                widgets.HBox([self.gpu, self.price]),
                self.plan,
                widgets.HBox([self.start_button, self.resume_button, self.stop_button, self.save_button, self.sample_button]),
                self.status,
                self.progress,
                self.live,
                widgets.HBox([self.loss_chart, widgets.VBox([self.sample_label, self.sample_image])]),
                widgets.HBox([widgets.HTML("<b>Images the run finds hardest</b>"), self.review_button]),
                self.review_box,
            ]
        )

        for key, widget in self.fields.items():
            widget.observe(self._method_changed if key == "method" else self._refresh, names="value")
        self.gpu.observe(self._gpu_changed, names="value")
        self.price.observe(self._refresh, names="value")
        self.start_button.on_click(lambda _b: self.start())
        self.resume_button.on_click(lambda _b: self.start(resume="latest"))
        self.stop_button.on_click(lambda _b: self.handle and self.handle.stop())
        self.save_button.on_click(lambda _b: self.handle and self.handle.save_now())
        self.sample_button.on_click(lambda _b: self.handle and self.handle.sample_now())
        self.review_button.on_click(lambda _b: self.refresh_review())
        for widget, name in (
            (self.start_button, "start"),
            (self.stop_button, "stop"),
            (self.status, "train-status"),
            (self.progress, "progress"),
            (self.live, "live"),
            (self.plan, "plan"),
            (self.loss_chart, "loss-chart"),
            (advanced, "advanced"),
        ):
            widget.add_class(f"edlib-{name}")
        self._refresh()

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    # -- the form --------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Set a form field (a config key; `token`/`init_word` for textual inversion)."""
        if key not in self.fields:
            raise KeyError(f"the training form has no field {key!r}; fields: {', '.join(self.fields)}")
        if key == "sample_prompts" and isinstance(value, list | tuple):
            value = "\n".join(value)
        self.fields[key].value = 0 if value is None and key in OPTIONAL_COUNTS else value

    def values(self) -> dict[str, Any]:
        """The form as config keys, before `config_from_form`'s conversions."""
        values = {key: widget.value for key, widget in self.fields.items()}
        values["data_root"] = str(self.data_root)
        return values

    def config(self) -> TrainConfig:
        return config_from_form(self.values())

    def _method_changed(self, change) -> None:
        """Each method has its own sensible learning rates; switching offers them."""
        self.fields["unet_lr"].value, self.fields["text_encoder_lr"].value = METHOD_LRS[change["new"]]
        self._refresh()

    def _gpu_changed(self, change) -> None:
        self.price.value = GPUS[change["new"]].price_per_hour
        self._refresh()

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(Path(self.fields["run_dir"].value) / "checkpoints")

    def _refresh(self, _change=None) -> None:
        """Re-plan from the form: steps and LR curve, memory, time and cost, which buttons apply."""
        running = self.handle is not None and self.handle.running
        try:
            config = self.config()
        except ConfigError as e:
            self.plan.value = error_text(e)
            self.start_button.disabled = True
            return
        self.preview = preview_run(self.scan, config)
        _show(self.lr_chart, lr_figure(self.preview))
        self.multipliers.set_plan(batch_size=config.batch_size, resolution=config.resolution, seed=config.seed)
        memory = estimate_memory(config)
        gpu = GPUS[self.gpu.value]
        fits = "fits" if memory.fits(gpu.name) else "<b style='color:#b00020'>does not fit</b>"
        self.memory.value = f"memory: {html.escape(memory.describe())}; {fits} on a {gpu.name}"
        self.estimate = estimate_time(config, self.preview.total_steps, gpu.name, price_per_hour=self.price.value)
        e = self.estimate
        self.plan.value = (
            f"<div style='line-height:1.6'><b>{e.steps}</b> optimizer steps ({self.preview.steps_per_epoch} per epoch) "
            f"&middot; on a {html.escape(gpu.name)}: <b>{format_duration(e.seconds)}</b>, about <b>${e.cost:.2f}</b> "
            f"&middot; memory about {memory.total_gib:.0f} GiB ({fits})<br>"
            f"<span style='color:#666;font-size:0.9em'>{html.escape(e.throughput.basis)}</span></div>"
        )
        existing = self.checkpoints()
        self.start_button.disabled = running or bool(existing)
        self.resume_button.disabled = running or not existing
        if existing and not running:
            self.status.value = (
                f"run_dir holds checkpoints (newest {existing[-1].name}): <b>Resume</b> continues it; "
                "for a new run, change run_dir"
            )

    # -- the run ---------------------------------------------------------------------------

    def start(self, resume: str | None = None) -> RunHandle | None:
        """Start the form's run (or resume it from `resume`, e.g. "latest"); the panel
        follows its events. Returns the handle, or None if the config is not valid."""
        try:
            self.scan = scan(self.data_root)  # the images as they are now
            self._refresh()
            config = self.config()
        except (ConfigError, DataRootError) as e:
            self.status.value = error_text(e)
            return None
        if self.handle is not None and self.handle.running:
            self.status.value = error_text(RuntimeError("this panel's run is still going; Stop it first"))
            return None
        with self._lock:
            self.loss_steps, self.losses = [], []
            self.recent.clear()
        self.epoch, self.epoch_samples, self._changed_for_epoch = None, {}, None
        self.exports = []
        self.progress.value, self.progress.max = 0, max(self.estimate.steps, 1)
        try:  # another panel's run in this kernel (a re-run cell) must stop first
            self.handle = start(config, resume=resume, callbacks=[self._on_event], plugins=self.plugins)
        except RuntimeError as e:
            self.status.value = error_text(e)
            return None
        self.status.value = ok_text(("resuming " if resume else "starting ") + str(config.run_dir))
        for button in (self.start_button, self.resume_button):
            button.disabled = True
        for button in (self.stop_button, self.save_button, self.sample_button):
            button.disabled = False
        return self.handle

    def wait(self, timeout: float | None = None):
        """Block until the run ends (scripts and CI; in a notebook, let it run and watch)."""
        if self.handle is None:
            raise RuntimeError("no run was started from this panel")
        return self.handle.wait(timeout)

    def _on_event(self, event: Event) -> None:
        """Called on the training thread. A mistake in showing an event is shown, never
        raised: raising here would stop the run."""
        try:
            self._show_event(event)
        except Exception as e:  # noqa: BLE001 - the run matters more than the panel
            self.status.value = error_text(RuntimeError(f"panel could not show a {event.kind} event: {e}"))

    def _show_event(self, event: Event) -> None:
        data = event.data
        if event.kind == "start":
            self.progress.max = max(data["total_steps"], 1)
            self.progress.value = data["step"]
        elif event.kind == "step":
            with self._lock:
                self.loss_steps.append(data["step"])
                self.losses.append(data["loss"])
                self.recent.append(data)
            self.progress.value = min(data["step"], self.progress.max)
            self.progress.description = f"step {data['step']} / {self.progress.max}"
            self._show_live(data)
            if time.monotonic() - self._chart_drawn >= CHART_SECONDS:
                self.draw_loss_chart()
        elif event.kind == "epoch":
            self.epoch = data["epoch"]
            self.progress.max = max(data["total_steps"], 1)  # re-counted when multipliers changed
            self.epoch_samples[data["epoch"]] = data["samples"]
            self.status.value = ok_text(f"epoch {data['epoch']}: {data['samples']} samples in {data['batches']} batches")
            self._note_epoch(data["epoch"])
            if data["epoch"] > 0:
                self.refresh_review()
        elif event.kind == "checkpoint":
            self.status.value = ok_text(f"saved checkpoint {Path(data['path']).name} at step {data['step']}")
        elif event.kind == "sample":
            self.sample_path = Path(data["path"])
            self.sample_image.value = self.sample_path.read_bytes()
            self.sample_image.layout.display = None
            where = _relative(self.sample_path, Path(self.fields["run_dir"].value))
            self.sample_label.value = f"samples at step {data['step']}: <code>{html.escape(where)}</code>"
        elif event.kind == "export":
            self.exports.append(Path(data["path"]))
            self.status.value = ok_text(f"exported {data['format']}: {Path(data['path']).name}")
        elif event.kind == "sample_request":
            self.status.value = "Sample now: this run has no sample_prompts; set them before starting"
        elif event.kind == "warning":
            self.status.value = f"<span style='color:#b26a00'>{html.escape(data['message'])}</span>"
        elif event.kind in ("done", "error"):
            self.draw_loss_chart()
            with self._lock:
                last = self.recent[-1] if self.recent else None
            if last is not None:
                self._show_live(last, running=False)  # no ETA once it is over
            if event.kind == "done":
                exported = f"; exported to exports/: {', '.join(p.name for p in self.exports)}" if self.exports else ""
                self.status.value = ok_text(f"finished at step {data['step']} ({data['stopped_by']}){exported}")
                self.refresh_review()
            else:
                self.status.value = error_text(RuntimeError(f"{data['type']}: {data['message']}"))
            for button in (self.stop_button, self.save_button, self.sample_button):
                button.disabled = True
            existing = self.checkpoints()
            self.resume_button.disabled = not existing
            self.start_button.disabled = bool(existing)

    # -- multipliers while it runs ---------------------------------------------------------

    def _multipliers_saved(self) -> None:
        """After a Save or Undo in the multiplier table: re-plan the form's estimate with the
        files as written, and say which epoch of a running run first uses them."""
        if self.multipliers.scan is not None:
            self.scan = self.multipliers.scan
        self._refresh()
        if self.handle is not None and self.handle.running and self.epoch is not None:
            self._changed_for_epoch = self.epoch + 1
            self.multipliers_note.value = (
                f"multiply.txt written while epoch {self.epoch} trains: the run uses the new multipliers from "
                f"epoch {self.epoch + 1} on (if it gets there)"
            )
        else:
            self.multipliers_note.value = "multiply.txt written: the next Start or Resume uses it"

    def _note_epoch(self, epoch: int) -> None:
        """When the epoch a mid-run Save was for begins, show its size next to the last one."""
        if self._changed_for_epoch is None or epoch < self._changed_for_epoch:
            return
        self._changed_for_epoch = None
        before = self.epoch_samples.get(epoch - 1)
        was = f" (epoch {epoch - 1} had {before})" if before is not None else ""
        self.multipliers_note.value = ok_text(
            f"epoch {epoch} trains with the new multipliers: {self.epoch_samples[epoch]} samples{was}"
        )

    def _show_live(self, metrics: dict[str, Any], *, running: bool = True) -> None:
        """Progress line, and the cost estimate redone with this run's measured images/s."""
        line = (
            f"{'' if running else 'last step: '}loss {metrics['loss']:.4f} &middot; lr {metrics['lr']:.3g} &middot; "
            f"{metrics['images_per_s']:.2f} images/s"
            + (f" &middot; ETA {format_duration(metrics['eta_s'])}" if running else "")
        )
        if self.estimate is not None:
            with self._lock:
                recent = list(self.recent)
            live = refine_time(self.estimate, recent)  # the first of these is skipped as warm-up
            if live is not self.estimate:
                line += (
                    f"<br><span style='color:#666'>at the measured {live.throughput.images_per_s:.3g} images/s the run takes "
                    f"{format_duration(live.seconds)}, about ${live.cost:.2f} at ${live.price_per_hour:g}/h"
                    + (f" ({format_duration(live.remaining_s)} left)" if running else "")
                    + "</span>"
                )
        self.live.value = line

    def draw_loss_chart(self) -> None:
        with self._lock:
            steps, losses = list(self.loss_steps), list(self.losses)
        self._chart_drawn = time.monotonic()
        if steps:
            _show(self.loss_chart, loss_figure(steps, losses))

    # -- per-image loss review -------------------------------------------------------------

    def refresh_review(self) -> None:
        """The `review_top` images with the highest normalised loss, flagged ones first,
        with a Quarantine button each (the trainer drops them from its next epoch)."""
        stats = self.handle.image_losses() if self.handle is not None else []
        stats = [s for s in stats if s.observations > 0 and (self.data_root / s.path).is_file()]
        stats.sort(key=lambda s: (not s.flagged, -s.mean))
        rows = []
        for s in stats[: self.review_top]:
            button = widgets.Button(description="Quarantine", icon="ban", layout={"width": "120px"})
            button.on_click(lambda _b, path=s.path: self.quarantine(path))
            flag = "<b style='color:#b00020'>flagged</b> " if s.flagged else ""
            label = widgets.HTML(
                f"{flag}<code>{html.escape(s.path)}</code><br>mean z {s.mean:+.2f} over {s.observations} "
                f"observation(s), trend {s.trend:+.3f}"
            )
            thumb = widgets.Image(value=thumbnail_png(self.data_root / s.path), format="png")
            rows.append(widgets.HBox([thumb, label, button], layout={"align_items": "center"}))
        if not rows:
            rows = [widgets.HTML("<i>no per-image losses yet (they start after the first steps)</i>")]
        self.review_box.children = rows

    def quarantine(self, rel_path: str) -> Path | None:
        """Move an image (and its caption files) to the data root's `_quarantine/`;
        `edlib.train.review.restore` brings it back."""
        run_dir = Path(self.fields["run_dir"].value)
        try:
            where = quarantine(
                self.data_root,
                [rel_path],
                run_dir=run_dir if (run_dir / "image_loss.csv").is_file() else None,
                reason="high loss, quarantined from the training panel",
            )
        except (OSError, ValueError) as e:
            self.status.value = error_text(e)
            return None
        self.status.value = ok_text(f"quarantined {rel_path}: the run drops it from its next epoch")
        self.refresh_review()
        self.multipliers.rescan()  # its folder has one image fewer
        return where


def _relative(path: Path, folder: Path) -> str:
    """`path` as seen from `folder` when it is inside it (shorter to read), else in full."""
    try:
        return str(path.resolve().relative_to(folder.resolve()))
    except ValueError:
        return str(path)


def _default_precision() -> str:
    """bf16 on a GPU that supports it (faster, safe), fp32 elsewhere (CPU, old cards)."""
    import torch

    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
