"""Notebook panel for training: a config form, the run's estimated time and cost, and a
live view of the run (progress, loss, images/s, samples, images it cannot learn).

The parts live in their own modules: the form (`training_form`; it turns into a
`TrainConfig` through `config_from_form`, plain library code), the estimate
(`training_estimate`: steps and LR curve from `edlib.data.preview`, memory, time and cost
from `edlib.model.estimate`), the live view (`training_live`) and the multiplier table editable
mid-run (`training_multipliers`). This module composes them and steers the run
(`edlib.train.start` and its handle). Events arrive on the training thread: see
`training_live` for what the panel may do there.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from edlib.data.scan import scan
from edlib.data.types import DataRootError, ScanResult
from edlib.model.checkpoint import finished_by, list_checkpoints
from edlib.model.config import ConfigError, TrainConfig
from edlib.train.handle import RunHandle, start
from edlib.train.hooks import Plugin
from edlib.train.loss_tracker import MIN_OBSERVATIONS
from edlib.train.review import quarantine
from edlib.train.run_dir import Event
from edlib.widgets.common import error_text, ok_text, widget_bundle
from edlib.widgets.training_estimate import EstimateView, lr_figure
from edlib.widgets.training_form import TrainingForm, config_from_form
from edlib.widgets.training_live import LiveView, loss_figure
from edlib.widgets.training_multipliers import MultipliersView

__all__ = ["TrainingPanel", "config_from_form", "loss_figure", "lr_figure"]


class TrainingPanel:
    """Configure, estimate, start and watch a training run; see the module docstring.

    `values` overrides the form's starting values (config keys, e.g. `{"max_steps": 3}`); `gpu`
    is the device the estimate is for (a key of `edlib.model.estimate.DEVICES`; default: the one
    a run started here trains on, the CPU on a machine without a GPU);
    `plugins` go to `edlib.train.start` with every run (e.g. a loss tracker with other settings).
    The parts are `form`, `estimate_view`, `live_view` and `multipliers_editor`; their widgets are also
    attributes of the panel under the names notebooks use (`fields`, `plan`, `progress`, ...)."""

    def __init__(
        self,
        data_root: str | Path,
        model: str | Path,
        run_dir: str | Path,
        *,
        values: dict[str, Any] | None = None,
        gpu: str | None = None,
        review_top: int = 8,
        plugins: Sequence[Plugin] = (),
    ):
        self.data_root = Path(data_root)
        self.plugins = list(plugins)
        self.scan: ScanResult = scan(self.data_root)
        self.handle: RunHandle | None = None
        self.exports: list[Path] = []  # what the last run exported when it ended
        self._stopping = False  # Stop was pressed (or the run ends by a stop request)
        self._ending = False  # the steps are over; end samples, last save and exports follow
        self._holding = False  # `_offer` is setting fields: each one's re-plan waits for the last

        self.form = TrainingForm(model, run_dir, values)
        self.estimate_view = EstimateView(gpu)
        self.live_view = LiveView(self.data_root, review_top=review_top, on_quarantine=self.quarantine)
        # The parts' widgets, never replaced, under the names notebooks and tests use.
        self.fields = self.form.fields
        self.gpu, self.price, self.plan = self.estimate_view.gpu, self.estimate_view.price, self.estimate_view.plan
        self.memory, self.lr_chart = self.estimate_view.memory, self.estimate_view.lr_chart
        v = self.live_view
        self.progress, self.live, self.loss_chart, self.review_box = v.progress, v.live, v.loss_chart, v.review_box
        self.sample_image, self.sample_label, self.review_button = v.sample_image, v.sample_label, v.review_button

        self.start_button = widgets.Button(description="Start", button_style="primary", icon="play")
        self.resume_button = widgets.Button(description="Resume", icon="repeat", tooltip="continue from the newest checkpoint in run_dir")
        self.stop_button = widgets.Button(description="Stop", button_style="danger", icon="stop", disabled=True)
        self.save_button = widgets.Button(description="Save now", icon="save", disabled=True)
        self.sample_button = widgets.Button(description="Sample now", icon="image", disabled=True)
        self.status = widgets.HTML()
        self.multipliers_editor = MultipliersView(self.data_root, on_saved=self._multipliers_saved)
        self.multipliers, self.multipliers_note = self.multipliers_editor.table, self.multipliers_editor.note
        self.multipliers_view = self.multipliers_editor.widget
        self.widget = self._layout()
        self._connect()
        self._refresh()

    def _layout(self) -> widgets.VBox:
        advanced = self.form.sections({"Learning rate and optimizer": [self.lr_chart], "Memory and speed": [self.memory]})
        for widget, name in (
            (self.start_button, "start"),
            (self.stop_button, "stop"),
            (self.status, "train-status"),
            (self.plan, "plan"),
            (advanced, "advanced"),
        ):
            widget.add_class(f"edlib-{name}")
        buttons = [self.start_button, self.resume_button, self.stop_button, self.save_button, self.sample_button]
        return widgets.VBox(
            [
                widgets.HTML("<b>Training</b>"),
                *self.form.top,
                advanced,
                widgets.HTML("<b>Estimate</b>"),
                widgets.HBox([self.gpu, self.price]),
                self.plan,
                widgets.HBox(buttons),
                self.status,
                self.live_view.widget,
            ]
        )

    def _connect(self) -> None:
        changed = {"method": self._method_changed, "model": self._model_changed}
        for key, widget in self.fields.items():
            widget.observe(changed.get(key, self._refresh), names="value")
        self.gpu.observe(self._refresh, names="value")
        self.price.observe(self._refresh, names="value")
        self.start_button.on_click(lambda _b: self.start())
        self.resume_button.on_click(lambda _b: self.start(resume="latest"))
        self.stop_button.on_click(lambda _b: self.stop())
        self.save_button.on_click(lambda _b: self.handle and self.handle.save_now())
        self.sample_button.on_click(lambda _b: self.sample_now())
        self.review_button.on_click(lambda _b: self.refresh_review())

    def _repr_mimebundle_(self, **kwargs):
        return widget_bundle(self.widget, **kwargs)

    # -- what the parts hold, under the panel's names --------------------------------------

    preview = property(lambda self: self.estimate_view.preview, doc="The planned run's steps and LR curve.")
    estimate = property(lambda self: self.estimate_view.estimate, doc="The planned run's time and cost.")
    loss_steps = property(lambda self: self.live_view.loss_steps, doc="The loss chart's steps.")
    losses = property(lambda self: self.live_view.losses, doc="The loss at each of `loss_steps`.")
    recent = property(lambda self: self.live_view.recent, doc="The last steps' metrics, for the live estimate.")
    sample_path = property(lambda self: self.live_view.sample_path, doc="The newest sample grid of the run.")
    epoch = property(lambda self: self.multipliers_editor.epoch, doc="The epoch the run is in, from its events.")
    epoch_samples = property(lambda self: self.multipliers_editor.epoch_samples, doc="Samples each epoch was planned with.")

    @property
    def running(self) -> bool:
        """Whether a run started from this panel is training."""
        return self.handle is not None and self.handle.running

    @property
    def review_top(self) -> int:
        return self.live_view.review_top

    @review_top.setter
    def review_top(self, value: int) -> None:
        self.live_view.review_top = value

    # -- the form --------------------------------------------------------------------------

    def set(self, key: str, value: Any) -> None:
        """Set a form field (a config key; `token`/`init_word` for textual inversion)."""
        self.form.set(key, value)

    def values(self) -> dict[str, Any]:
        """The form as config keys, before `config_from_form`'s conversions."""
        return {**self.form.values(), "data_root": str(self.data_root)}

    def config(self) -> TrainConfig:
        return config_from_form(self.values())

    def _method_changed(self, change) -> None:
        self._offer(lambda: self.form.offer_method_lrs(change["new"]))

    def _model_changed(self, _change) -> None:
        self._offer(self.form.offer_model_defaults)  # its resolution and learning rates

    def _offer(self, offer: Callable[[], None]) -> None:
        """Fill the fields `offer` sets with re-planning held, then re-plan once: one model or
        method change, not one per field (nor a config half changed, which may not validate)."""
        self._holding = True
        try:
            offer()
        finally:
            self._holding = False
        self._refresh()

    def checkpoints(self) -> list[Path]:
        return list_checkpoints(Path(self.fields["run_dir"].value) / "checkpoints")

    def _refresh(self, _change=None) -> None:
        """Re-plan from the form: steps and LR curve, memory, time and cost, which buttons apply."""
        if self._holding:
            return
        try:
            config = self.config()
        except ConfigError as e:
            self.estimate_view.show_error(e)
            self.start_button.disabled = True
            return
        self.estimate_view.update(self.scan, config)
        self.multipliers.set_plan(batch_size=config.batch_size, resolution=config.resolution, seed=config.seed)
        existing, finished = self._offer_buttons(running=self.running, config=config)
        if existing and not self.running:
            self.status.value = _run_dir_note(existing[-1], finished)

    def _offer_buttons(self, *, running: bool, config: TrainConfig | None = None) -> tuple[list[Path], str | None]:
        """Start for a new run folder, Resume where checkpoints are and resuming would train
        (not for a run that reached its epochs or max_steps: resuming it would only sample and
        export again), neither while one runs. Returns the checkpoints found and why the
        newest one is finished (None: it is not)."""
        existing = self.checkpoints()
        finished = finished_by(existing[-1], config.epochs, config.max_steps) if existing and config else None
        self.start_button.disabled = running or bool(existing)
        self.resume_button.disabled = running or not existing or finished is not None
        return existing, finished

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
        if self.running:
            self.status.value = error_text(RuntimeError("this panel's run is still going; Stop it first"))
            return None
        self.live_view.reset(self.estimate.steps)
        self.multipliers_editor.reset()
        self.exports = []
        self._stopping = False
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

    def stop(self) -> None:
        """Ask the run to stop after its current step: it saves a checkpoint and exports,
        without end samples (notebook 04 draws them later). The status says what it does."""
        if not self.running:
            return
        # All set before the request: the run's thread may save (and show it) at once.
        self._stopping = True
        for button in (self.stop_button, self.save_button, self.sample_button):
            button.disabled = True
        self.status.value = ok_text("stopping: finishing the current step, then saving a checkpoint")
        self.handle.stop()

    def sample_now(self) -> None:
        """Ask for samples after the current step; the button waits until they are drawn."""
        if not self.running:
            return
        self.sample_button.disabled = True  # before the request: its samples may come at once
        self.status.value = ok_text("Sample now: sampling after the current step...")
        self.handle.sample_now()

    def wait(self, timeout: float | None = None):
        """Block until the run ends (scripts and CI; in a notebook, let it run and watch)."""
        if self.handle is None:
            raise RuntimeError("no run was started from this panel")
        return self.handle.wait(timeout)

    def _on_event(self, event: Event) -> None:
        """Called on the training thread. A mistake in showing an event is shown, never
        raised: raising here would stop the run."""
        try:
            self.live_view.show_event(event, estimate=self.estimate, run_dir=Path(self.fields["run_dir"].value))
            self._show_event(event)
        except Exception as e:  # noqa: BLE001 - the run matters more than the panel
            self.status.value = error_text(RuntimeError(f"panel could not show a {event.kind} event: {e}"))

    def _show_event(self, event: Event) -> None:
        """The status line, the multiplier note, the review and the buttons; the live view
        shows the rest."""
        data = event.data
        doing = "stopping: " if self._stopping else "finishing: " if self._ending else ""
        if event.kind == "epoch":
            self.status.value = ok_text(f"epoch {data['epoch']}: {data['samples']} samples in {data['batches']} batches")
            self.multipliers_editor.epoch_began(data["epoch"], data["samples"])
            if data["epoch"] > 0:
                self.refresh_review()
        elif event.kind == "saving":
            self.status.value = ok_text(f"{doing}saving a checkpoint at step {data['step']}...")
        elif event.kind == "checkpoint":
            self.status.value = ok_text(f"{doing}saved checkpoint {Path(data['path']).name} at step {data['step']}")
        elif event.kind == "ending":
            self._ending = True
            self._stopping = data["stopped_by"] == "stop request"
            for button in (self.stop_button, self.save_button, self.sample_button):
                button.disabled = True  # the steps are over: nothing left to steer
        elif event.kind == "sampling":
            self.status.value = ok_text(doing + _sampling_text(data))
        elif event.kind == "sample" and not (self._ending or self._stopping):
            self.sample_button.disabled = False  # Sample now may be asked again
        elif event.kind == "exporting":
            self.status.value = ok_text(f"{doing}exporting {data['format']}...")
        elif event.kind == "export":
            self.exports.append(Path(data["path"]))
            self.status.value = ok_text(f"{doing}exported {data['format']}: {Path(data['path']).name}")
        elif event.kind == "sample_request":
            self.sample_button.disabled = self._ending or self._stopping
            self.status.value = "Sample now: this run has no sample_prompts; set them before starting"
        elif event.kind == "warning":
            self.status.value = f"<span style='color:#b26a00'>{html.escape(data['message'])}</span>"
        elif event.kind in ("done", "error"):
            self._ended(event)

    def _ended(self, event: Event) -> None:
        data = event.data
        if event.kind == "done":
            exported = f"; exported to exports/: {', '.join(p.name for p in self.exports)}" if self.exports else ""
            self.status.value = ok_text(f"finished at step {data['step']} ({data['stopped_by']}){exported}")
            self.refresh_review()
        else:
            self.status.value = error_text(RuntimeError(f"{data['type']}: {data['message']}"))
        for button in (self.stop_button, self.save_button, self.sample_button):
            button.disabled = True
        self._stopping = self._ending = False
        # The run's thread is still ending: it counts as over. A finished run offers no Resume.
        _, finished = self._offer_buttons(running=False, config=self.handle.config if self.handle else None)
        if finished and event.kind == "done":
            self.status.value += f"<br>{_finished_text(finished)}"

    # -- multipliers while it runs ---------------------------------------------------------

    def _multipliers_saved(self) -> None:
        """After a Save or Undo in the multiplier table: re-plan the form's estimate with the
        files as written, and say which epoch of a running run first uses them."""
        if self.multipliers.scan is not None:
            self.scan = self.multipliers.scan
        self._refresh()
        self.multipliers_editor.saved(running=self.running)

    # -- per-image loss review -------------------------------------------------------------

    def draw_loss_chart(self) -> None:
        self.live_view.draw_loss_chart()

    def refresh_review(self) -> None:
        """The `review_top` hardest images, flagged ones first, with a Quarantine button each
        (the trainer drops them from its next epoch)."""
        handle = self.handle
        tracker = handle.loss_tracker.tracker if handle is not None and handle.loss_tracker is not None else None
        minimum = tracker.min_observations if tracker is not None else MIN_OBSERVATIONS
        self.live_view.show_review(handle.image_losses() if handle is not None else [], min_observations=minimum)

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


def _sampling_text(data: dict) -> str:
    """A "sampling" event in words: why, and how far."""
    what = {"end": "drawing end samples", "request": "Sample now: sampling"}.get(data["why"], "sampling")
    return f"{what} {data['done']}/{data['total']} (step {data['step']})"


def _finished_text(stopped_by: str) -> str:
    """`stopped_by` is `finished_by`'s "epochs" or "max_steps": the key to raise."""
    return (
        f"the run is finished ({stopped_by}): Resume would only sample and export again. To train it further, "
        f"raise {stopped_by}; for a new run, change run_dir"
    )


def _run_dir_note(newest: Path, finished: str | None) -> str:
    """What the panel says about a run_dir that already holds checkpoints."""
    if finished:
        return f"run_dir holds a finished run (newest checkpoint {newest.name}): {_finished_text(finished)}"
    return f"run_dir holds checkpoints (newest {newest.name}): <b>Resume</b> continues it; for a new run, change run_dir"
