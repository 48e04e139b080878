"""The training loop: one function, `train`, read top to bottom.

Built on accelerate, so the same code runs on the CPU, one GPU, or several GPUs
(`accelerate launch -m edlib train CONFIG`). Each epoch's schedule (edlib.data.schedule) is
realised at `batch_size x processes` and process r trains slots [r*b, (r+1)*b) of every
batch, so every scheduled sample is trained exactly once. An optimizer step is
`gradient_accumulation_steps` consecutive batches (fewer at the end of an epoch), the rule
the preview counts steps by.

What makes resume exact: the position (epoch, next batch, step) is saved with the weights,
optimizer, LR scheduler, grad scaler, EMA and RNG states; schedules depend only on (seed,
epoch, folder settings, per-image weights), and the current epoch's settings and weights
are saved too; and every per-sample random draw (caption, latent, noise, timestep) comes
from a generator seeded by (seed, epoch, batch, slot), never from where a run last stopped.

The mechanics live in small modules beside this one: `setup` (accelerator, data, models,
optimizer), `begin` (fresh start, new phase or resume), `epochs` (each epoch's schedule),
`step` (one optimizer step), `progress` (metrics, the non-finite rule), `saving` (requests
and checkpoints); the model layer (`edlib.model`) says what trains (`methods`) and how it is
saved (`checkpoint`). Features plug in as a `Plugin` (`hooks`): sampling, per-image loss
tracking, validation, the end-of-run export.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from edlib.model import checkpoint as ckpt
from edlib.model.config import TrainConfig
from edlib.train.batches import BatchEncoder, local_batch
from edlib.train.begin import begin
from edlib.train.epoch_state import restore_epoch
from edlib.train.epochs import start_epoch
from edlib.train.hooks import Context, Plugin
from edlib.train.plugins import run_plugins
from edlib.train.progress import RunState, flush, record_step
from edlib.train.run_dir import Event, Reporter, RunDir
from edlib.train.run_lock import run_lock
from edlib.train.saving import after_step, save
from edlib.train.setup import Training, build_training, load_data, make_accelerator, planned_steps
from edlib.train.step import optimizer_step
from edlib.train.unreadable import UnreadableImages


@dataclass
class RunSummary:
    run_dir: Path
    step: int
    epoch: int
    stopped_by: str  # "epochs", "max_steps" or "stop request"
    last_checkpoint: Path | None
    last_loss: float | None
    exports: list[Path] = field(default_factory=list)  # written at the end (`export_formats`)

    def __str__(self) -> str:
        loss = "" if self.last_loss is None else f", last loss {self.last_loss:.4f}"
        text = (
            f"run {self.run_dir}: stopped by {self.stopped_by} at step {self.step} (epoch {self.epoch}){loss}; "
            f"last checkpoint: {self.last_checkpoint}"
        )
        return text + "".join(f"\n  exported: {path}" for path in self.exports)


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    *,
    callbacks: Sequence[Callable[[Event], None]] = (),
    plugins: Sequence[Plugin] = (),
    progress_bar: bool | None = None,
    requested_at: float | None = None,
) -> RunSummary:
    """Train as `config` says, resuming from `resume` ("latest", a checkpoint or a run
    folder) if given. Blocks until done, stopped (control/stop) or failed.

    `plugins` hook in sampling, loss tracking and the like; `callbacks` receive every
    `Event`. Control requests older than `requested_at` (default: now) are left over from
    an earlier process and dropped; `start` passes the time it was called. The run folder
    is locked while the run trains (`edlib.train.run_lock`): a second run on it fails."""
    with run_lock(config.run_dir):
        return _train(config, resume, callbacks, plugins, progress_bar, requested_at)


def _train(config, resume, callbacks, plugins, progress_bar, requested_at) -> RunSummary:
    accelerator = make_accelerator(config)
    run = RunDir(config.run_dir, writer=accelerator.is_main_process)
    report = Reporter(run, callbacks, accelerator, config)
    run.clear_stale_requests(before=requested_at or time.time())
    set_seed(config.seed, device_specific=True)

    data, validation = load_data(config, report)  # bad input fails before any model loads
    plugins = run_plugins(plugins, config, validation)
    total_steps = planned_steps(data, config, accelerator.num_processes)
    training = build_training(config, accelerator, report, total_steps)
    start = begin(config, resume, run, report, training, accelerator, plugins)
    position = start.position
    next_data = None
    if start.resumed:  # this epoch (mid-epoch: its images too) or the last one as planned
        next_data = restore_epoch(data, start.folder_settings, None)
        data = restore_epoch(data, start.folder_settings, start.epoch_items if position.batch > 0 else None)
    training.optimizer = accelerator.prepare(training.optimizer)
    encoder = _batch_encoder(training, config, run, accelerator)
    ctx = Context(config, accelerator, run, training.models, training.method, position, training.ema, data, report)
    ctx.item_weights = start.item_weights
    # A resumed run at an epoch boundary re-reads the settings at that epoch's start, as the
    # unbroken run does; a mid-epoch resume finishes its epoch as planned.
    planned_epoch = position.epoch if not start.resumed or position.batch > 0 else None
    state = RunState(start.total_steps or total_steps, planned_epoch, next_data=next_data if position.batch > 0 else None)
    if position.step >= (config.max_steps or math.inf):
        state.stopped_by = "max_steps"
    for plugin in plugins:
        plugin.on_start(ctx)
    report.event("start", {"total_steps": state.total_steps, **asdict(position)})
    unreadable = UnreadableImages(run, report)  # images gone or undecodable mid-run are skipped

    bar = tqdm(
        total=state.total_steps, initial=position.step, disable=not _show_bar(progress_bar, accelerator), unit="step", desc="training"
    )
    while position.epoch < config.epochs and state.stopped_by == "epochs":
        epoch = position.epoch
        schedule = start_epoch(ctx, plugins, state)
        encoder.start_epoch(ctx.data, schedule, position.batch, partial(local_batch, epoch=epoch, **_process(accelerator)))
        bar.total = state.total_steps
        for first in range(position.batch, len(schedule), config.gradient_accumulation_steps):
            group = range(first, min(first + config.gradient_accumulation_steps, len(schedule)))
            loss, nonfinite = optimizer_step(ctx, training, encoder, schedule, epoch, group, plugins, unreadable)
            metrics = record_step(ctx, state, training.lr_scheduler, len(schedule), group.stop, loss, nonfinite)
            for plugin in plugins:  # before reporting: a plugin may add metrics (validation loss)
                plugin.on_step(ctx, metrics)
            if config.is_logging_step(position.step):
                flush(ctx, state)  # the window's losses come back: the only read of a step
                bar.set_postfix_str(f"loss {state.last_loss:.4f}, {metrics['images_per_s']:.1f} images/s, epoch {epoch}")
            bar.update(1)
            after_step(ctx, training, plugins, state, epoch_done=position.epoch > epoch)
            if state.stopped_by != "epochs":
                break
        if position.epoch > epoch:
            for plugin in plugins:
                plugin.on_epoch_end(ctx)
    bar.close()
    encoder.close()
    return _finish(ctx, training, plugins, state)


def _finish(ctx: Context, training: Training, plugins: list[Plugin], state: RunState) -> RunSummary:
    """The end of a run: plugins' end work (samples), the last checkpoint, then the hooks that
    need it saved (exports). An "ending" event says it began: the steps are over, the end
    work can take minutes (its own events say which part is under way)."""
    position, report = ctx.position, ctx.report
    flush(ctx, state)
    ctx.stopped_by = state.stopped_by
    report.event("ending", {"step": position.step, "stopped_by": state.stopped_by})
    for plugin in plugins:
        plugin.on_end(ctx)
    if state.last_saved is None or ckpt.checkpoint_step(state.last_saved) != position.step:
        state.last_saved = save(ctx, training, plugins, state)
    for plugin in plugins:
        plugin.after_end(ctx, state.last_saved)
    report.event("done", {"step": position.step, "epoch": position.epoch, "stopped_by": state.stopped_by})
    report.log(f"training ended at step {position.step} ({state.stopped_by}); last checkpoint {state.last_saved}")
    ctx.accelerator.end_training()
    return RunSummary(
        Path(ctx.config.run_dir), position.step, position.epoch, state.stopped_by, state.last_saved, state.last_loss, ctx.exports
    )


def _batch_encoder(training: Training, config: TrainConfig, run: RunDir, accelerator: Accelerator) -> BatchEncoder:
    return BatchEncoder(
        training.models,
        config,
        text_encoder_trains=training.method.text_encoder_trains(training.models),
        cache_dir=run.path / "cache",
        prepare_captions=training.method.prepare_captions,
        device=accelerator.device,
    )


def _process(accelerator: Accelerator) -> dict[str, int]:
    return {"process_index": accelerator.process_index, "num_processes": accelerator.num_processes}


def _show_bar(progress_bar: bool | None, accelerator: Accelerator) -> bool:
    """By default a bar in a terminal and in a notebook cell (tqdm.auto draws a widget
    there; a notebook's stderr is no terminal), not in logs and tests."""
    wanted = (sys.stderr.isatty() or _in_notebook()) if progress_bar is None else progress_bar
    return wanted and accelerator.is_local_main_process


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (JupyterLab, Colab, VS Code)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})
