"""After each step: control requests (stop, save, sample), the end conditions, and the save
policy. Decisions are the main process's, shared with the others, so every process saves and
stops at the same step."""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import broadcast_object_list

from edlib.model import checkpoint as ckpt
from edlib.model.config import TrainConfig
from edlib.train.epoch_state import epoch_items, folder_settings
from edlib.train.hooks import Context, Plugin
from edlib.train.progress import RunState, flush
from edlib.train.run_dir import RunDir
from edlib.train.setup import Training, unwrapper


def after_step(ctx: Context, training: Training, plugins: list[Plugin], state: RunState, epoch_done: bool) -> None:
    """Serve requests, decide whether the run stops here (`state.stopped_by`), and save
    when a request, a cadence or the stop asks for it."""
    config, run, position, report = ctx.config, ctx.run, ctx.position, ctx.report
    requests, minutes_due = set(), False
    # One process looks at the control files and the clock; several must agree, which takes
    # a collective through the host: on logging steps only, so a step never waits for one.
    if ctx.accelerator.num_processes == 1 or config.is_logging_step(position.step):
        requests, minutes_due = _agree(run, ctx.accelerator, config, time.time() - state.last_save_time)
    if "sample" in requests and not any(plugin.sample(ctx) for plugin in plugins):
        report.event("sample_request", {"step": position.step, "served": False})
        report.log("sample request received: no sampler is configured for this run, ignored")
    if position.step >= (config.max_steps or math.inf):
        state.stopped_by = "max_steps"
    elif "stop" in requests:
        state.stopped_by = "stop request"
    if save_due(config, position.step, position.epoch, requests, minutes_due, epoch_done, state.stopped_by != "epochs"):
        flush(ctx, state)  # the non-finite rule needs the steps' losses before it lets a save through
        if state.nonfinite_in_a_row:
            report.log(f"step {position.step}: checkpoint not saved while the loss is NaN/inf")
        else:
            state.last_saved = save(ctx, training, plugins, state)
            state.last_save_time = time.time()
    for name in requests:
        run.clear_request(name)


def save_due(
    config: TrainConfig, step: int, epoch: int, requests: set[str], minutes_due: bool, epoch_done: bool, stopping: bool
) -> bool:
    """Whether this step ends with a checkpoint: asked for, due by a cadence, or the last."""
    return bool(
        "save" in requests
        or minutes_due
        or stopping
        or (config.save_every_n_steps and step % config.save_every_n_steps == 0)
        or (epoch_done and config.save_every_n_epochs and epoch % config.save_every_n_epochs == 0)
    )


def _agree(run: RunDir, accelerator: Accelerator, config: TrainConfig, since_save_s: float) -> tuple[set[str], bool]:
    """Control requests and the minutes-based save, decided by the main process and shared."""
    decision = [
        (
            run.pending_requests() if accelerator.is_main_process else set(),
            bool(config.save_every_n_minutes and since_save_s >= config.save_every_n_minutes * 60),
        )
    ]
    if accelerator.num_processes > 1:
        broadcast_object_list(decision)
    return decision[0]


def save(ctx: Context, training: Training, plugins: list[Plugin], progress: RunState) -> Path:
    """Write a complete checkpoint of the run as it is now (atomically), and prune old ones."""
    run, accelerator, config, position, report = ctx.run, ctx.accelerator, ctx.config, ctx.position, ctx.report
    main = accelerator.is_main_process
    report.event("saving", {"step": position.step})
    state = None
    if main:
        state = {
            "format": 1,
            "step": position.step,
            "position": asdict(position),
            "optimizer": training.optimizer.state_dict(),
            "lr_scheduler": training.lr_scheduler.state_dict(),
            "lr_steps": training.lr_steps,  # the schedule's length (see `begin._resume`)
            "total_steps": progress.total_steps,  # the run's length as last re-counted
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "ema": training.ema.state_dict() if training.ema is not None else None,
            "plugins": {p.name: p.state_dict() for p in plugins},
            "folder_settings": folder_settings(ctx.data),
            "epoch_items": epoch_items(ctx.data),
            "item_weights": ctx.item_weights,
            "config": config.model_dump(mode="json"),
        }
    weights = training.method.checkpoint_weights(training.models, unwrap=unwrapper(accelerator)) if main else None
    path = ckpt.save_checkpoint(run.checkpoints, position.step, weights=weights, state=state, accelerator=accelerator)
    if main:
        for old in ckpt.prune_checkpoints(run.checkpoints, config.keep_last_n_checkpoints):
            report.log(f"removed old checkpoint {old.name} (keep_last_n_checkpoints={config.keep_last_n_checkpoints})")
    report.event("checkpoint", {"step": position.step, "path": str(path)})
    report.log(f"saved checkpoint {path}")
    return path
