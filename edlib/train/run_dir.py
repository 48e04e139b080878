"""The run folder (DESIGN.md "Run folder"): everything a run writes, in one place, and the
`Reporter` through which the loop tells the world (events, log lines, metrics).

    runs/NAME/
      config.yaml     effective configuration, written at start (and on resume)
      phase.json      where the starting weights came from (init_from / resume chain)
      log.txt         human-readable log, also sent to Python logging (console / notebook)
      metrics.jsonl   one JSON object per optimizer step
      schedules/      ep{E}_batch_schedule.txt when write_schedule is on
      checkpoints/    see edlib.model.checkpoint
      control/        request files: `stop`, `save`, `sample`

Only the main process writes; other processes of a multi-GPU run get a `RunDir` whose
writes are no-ops (`writer=False`) so the loop needs no `if main_process` everywhere.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger("edlib.train")

# What a notebook, a user or the CLI may ask of a running training, one file per request.
CONTROL_REQUESTS = ("stop", "save", "sample")


class RunDir:
    """Paths and writers of one run folder."""

    def __init__(self, path: str | Path, *, writer: bool = True):
        self.path = Path(path)
        self.writer = writer
        if writer:
            for sub in (self.checkpoints, self.control, self.schedules):
                sub.mkdir(parents=True, exist_ok=True)

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def control(self) -> Path:
        return self.path / "control"

    @property
    def schedules(self) -> Path:
        return self.path / "schedules"

    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def log_file(self) -> Path:
        return self.path / "log.txt"

    # -- config and phase ---------------------------------------------------------------

    def read_config(self) -> dict[str, Any] | None:
        """The config a previous start of this run wrote, or None for a fresh folder."""
        if not self.config_file.exists():
            return None
        return yaml.safe_load(self.config_file.read_text(encoding="utf-8"))

    def write_config(self, config: dict[str, Any]) -> None:
        if self.writer:
            text = yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
            self.config_file.write_text(text, encoding="utf-8")

    def write_phase(self, phase: dict[str, Any]) -> None:
        """Record where this run's starting weights came from, so a chain of phases
        (640 px, then 704 px with revised captions, ...) can be traced back."""
        if self.writer:
            (self.path / "phase.json").write_text(json.dumps(phase, indent=2) + "\n", encoding="utf-8")

    # -- log and metrics -----------------------------------------------------------------

    def log(self, message: str, *, level: int = logging.INFO) -> None:
        """One line to log.txt (with a UTC time stamp) and to Python logging; main process
        only, so a multi-GPU run does not print every line once per GPU."""
        if self.writer:
            logger.log(level, message)
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
            prefix = "" if level < logging.WARNING else f"{logging.getLevelName(level)}: "
            with self.log_file.open("a", encoding="utf-8") as f:
                f.write(f"{stamp} {prefix}{message}\n")

    def append_metrics(self, record: dict[str, Any]) -> None:
        if self.writer:
            with self.metrics_file.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics_file.exists():
            return []
        lines = self.metrics_file.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past `after_step`: on resume, steps a killed process trained
        after its last checkpoint are trained again, and should appear only once."""
        if self.writer and self.metrics_file.exists():
            kept = [r for r in self.read_metrics() if r.get("step", 0) <= after_step]
            self.metrics_file.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")

    # -- control requests ----------------------------------------------------------------

    def request(self, name: str) -> None:
        """Ask the running training for `name` (one of CONTROL_REQUESTS); it is picked up
        between optimizer steps. Works from any process: it is only a file."""
        if name not in CONTROL_REQUESTS:
            raise ValueError(f"unknown control request {name!r}; allowed: {', '.join(CONTROL_REQUESTS)}")
        self.control.mkdir(parents=True, exist_ok=True)
        (self.control / name).touch()

    def pending_requests(self) -> set[str]:
        return {name for name in CONTROL_REQUESTS if (self.control / name).exists()}

    def clear_stale_requests(self, before: float) -> None:
        """Remove requests older than `before` (a time stamp): left by a run that was killed
        before it could act on them, they must not stop or save the run starting now. A
        request made after `before` (e.g. `stop()` right after `start()`) is kept; a second
        of slack covers file systems whose time stamps lag the clock."""
        if self.writer:
            for name in CONTROL_REQUESTS:
                path = self.control / name
                if path.exists() and path.stat().st_mtime < before - 1.0:
                    path.unlink(missing_ok=True)

    def clear_request(self, name: str) -> None:
        """Remove a handled request (main process only, after every process acted on it)."""
        if self.writer:
            (self.control / name).unlink(missing_ok=True)


@dataclass
class Event:
    """What the loop reports: kind is one of "start", "epoch", "step", "saving" (a
    checkpoint is being written), "checkpoint" (it is), "sampling" (from the sampling plugin:
    `done` of `total` images, `why`), "sample" (step and grid path), "sample_request",
    "warning", "ending" (the steps are over: `stopped_by`; end samples, the last save and
    exports follow), "exporting" (`format`), "export" (a file written), "done" (and "error",
    from `RunHandle` when the run raises). `data` is JSON-able; a "step" event's data is its
    metrics.jsonl line."""

    kind: str
    data: dict[str, Any]


class Reporter:
    """One place for what the loop tells the world: events to callbacks, lines to log.txt,
    metrics to metrics.jsonl (and TensorBoard), step timing for images/s and the ETA."""

    def __init__(self, run: RunDir, callbacks: Sequence[Callable[[Event], None]], accelerator, config):
        """`accelerator` decides who reports (the main process); `config` gives the log
        cadence and whether to write TensorBoard logs through accelerate's tracker."""
        self.run, self.callbacks, self.accelerator, self.config = run, list(callbacks), accelerator, config
        self._step_seconds: float | None = None
        if config.tensorboard:
            accelerator.init_trackers("tensorboard")

    def event(self, kind: str, data: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            for callback in self.callbacks:
                callback(Event(kind, data))

    def log(self, message: str) -> None:
        self.run.log(message)

    def warning(self, message: str) -> None:
        self.run.log(message, level=logging.WARNING)
        self.event("warning", {"message": message})

    def eta(self, step: int, total_steps: int, step_seconds: float) -> float:
        """Seconds to the planned last step, from a smoothed step time."""
        smooth = step_seconds if self._step_seconds is None else 0.9 * self._step_seconds + 0.1 * step_seconds
        self._step_seconds = smooth
        return max(total_steps - step, 0) * smooth

    def step(self, metrics: dict[str, Any]) -> None:
        self.run.append_metrics(metrics)
        if self.config.tensorboard:
            self.accelerator.log({k: v for k, v in metrics.items() if isinstance(v, float | int)}, step=metrics["step"])
        if self.config.is_logging_step(metrics["step"]):
            self.log(
                f"step {metrics['step']} epoch {metrics['epoch']:.2f} loss {metrics['loss']:.4f} "
                f"lr {metrics['lr']:.3g} {metrics['images_per_s']:.1f} img/s eta {metrics['eta_s'] / 60:.1f} min"
            )
        self.event("step", metrics)
