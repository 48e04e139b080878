"""Training from a notebook: `start(config)` runs `train` in a background thread and returns
a `RunHandle` to watch it, steer it and wait for it.

The handle steers the run through the run folder's `control/` files (`stop`, `save`,
`sample`), the same requests a user or another process can make for a CLI-started run, so
there is one way in and it is tested once. Events (step, epoch, checkpoint, warning, ...)
come from the loop's callbacks; the handle keeps the latest values for a progress panel and
forwards every event to the callbacks given to `start`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edlib.model.config import TrainConfig
from edlib.train.hooks import Plugin
from edlib.train.loop import RunSummary, train
from edlib.train.loss_tracker import ImageStats, LossTrackerPlugin
from edlib.train.run_dir import Event, RunDir

_active: RunHandle | None = None  # one run per process: accelerate's state is process-wide


class RunHandle:
    """A training run in a background thread. Thread-safe to read from another thread."""

    def __init__(self, config: TrainConfig, callbacks: Sequence[Callable[[Event], None]], plugins: Sequence[Plugin]):
        self.config = config
        self.plugins = list(plugins)
        # The handle owns the run's loss tracker (instead of the config's default one) so a
        # notebook can read per-image losses live.
        self.loss_tracker: LossTrackerPlugin | None = next((p for p in self.plugins if p.name == "loss_tracker"), None)
        if self.loss_tracker is None and config.loss_tracking:
            self.loss_tracker = LossTrackerPlugin()
            self.plugins.append(self.loss_tracker)
        self.run_dir = RunDir(config.run_dir, writer=False)
        self.events: list[Event] = []
        self.latest: dict[str, Any] = {}  # last value of step, epoch, loss, lr, images_per_s, eta_s
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self._callbacks = list(callbacks)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._created = time.time()  # requests made from now on are for this run

    # -- steering ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the run to save a checkpoint and stop after the current optimizer step."""
        self.run_dir.request("stop")

    def save_now(self) -> None:
        """Ask for a checkpoint after the current optimizer step."""
        self.run_dir.request("save")

    def sample_now(self) -> None:
        """Ask for sample images after the current optimizer step. The loop hands the
        request to its sampling plugin (edlib.sample); without one it is logged and dropped."""
        self.run_dir.request("sample")

    # -- watching ------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def metrics(self) -> list[dict[str, Any]]:
        """Every optimizer step's metrics so far (as in metrics.jsonl)."""
        with self._lock:
            return [e.data for e in self.events if e.kind == "step"]

    def image_losses(self) -> list[ImageStats]:
        """Per-image loss statistics so far, worst (flagged) first; empty without loss
        tracking. Read while the run trains, so it may lag the latest step."""
        return self.loss_tracker.tracker.stats() if self.loss_tracker is not None else []

    def wait(self, timeout: float | None = None) -> RunSummary:
        """Block until the run ends and return its summary. An exception in the run is
        raised here, with the traceback of where it happened in the training thread."""
        if self._thread is None:
            raise RuntimeError("the run was never started")
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"the run in {self.config.run_dir} is still going after {timeout} s")
        if self.error is not None:
            raise self.error
        return self.summary

    # -- internals -----------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)
            if event.kind == "step":
                self.latest.update(event.data)
        for callback in self._callbacks:
            callback(event)

    def _run(self, resume: str | Path | None) -> None:
        try:
            self.summary = train(
                self.config,
                resume=resume,
                callbacks=[self._on_event],
                plugins=self.plugins,
                progress_bar=False,
                requested_at=self._created,
            )
        except BaseException as error:  # noqa: BLE001 - handed to wait(), with its traceback
            self.error = error
            self._on_event(Event("error", {"type": type(error).__name__, "message": str(error)}))


def start(
    config: TrainConfig,
    resume: str | Path | None = None,
    callbacks: Sequence[Callable[[Event], None]] = (),
    plugins: Sequence[Plugin] = (),
) -> RunHandle:
    """Start `train(config, resume, plugins=plugins)` in a background thread and return
    its handle.

    `callbacks` are called in the training thread with every `Event`; keep them quick (a
    slow callback slows training). A callback that raises stops the run with that error."""
    global _active
    if _active is not None and _active.running:
        raise RuntimeError(
            f"a run is already training in this process ({_active.config.run_dir}); "
            "stop() it and wait() for it before starting another (both would share accelerate's state)"
        )
    handle = RunHandle(config, callbacks, plugins)
    _active = handle
    handle._thread = threading.Thread(target=handle._run, args=(resume,), name=f"edlib-train:{config.run_dir}", daemon=True)
    handle._thread.start()
    return handle
