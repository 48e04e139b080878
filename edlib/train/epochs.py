"""The start of each epoch: folder settings edited during the last one are picked up, the
plugins' per-image weights applied, and the epoch's exact schedule realised (the same draw the
preview shows). When that changes the run's length, progress and ETA follow."""

from __future__ import annotations

import math

from edlib.data.preview import optimizer_steps
from edlib.data.reread import reread_settings
from edlib.data.schedule import EpochSchedule, realise_epoch, write_schedule
from edlib.model.plan import preview_run
from edlib.train.hooks import Context, Plugin, merged_item_weights
from edlib.train.progress import RunState


def start_epoch(ctx: Context, plugins: list[Plugin], state: RunState) -> EpochSchedule:
    """The schedule of the epoch at `ctx.position` (from its next batch on, when resumed)."""
    config, position, report, accelerator = ctx.config, ctx.position, ctx.report, ctx.accelerator
    epoch, changes = position.epoch, []
    if epoch != state.planned_epoch:  # settings edited during the last epoch apply from now on
        ctx.data, changes = reread_settings(state.next_data if state.next_data is not None else ctx.data)
        state.next_data = None
        for change in changes:
            report.log(f"epoch {epoch}: {change}")
    if position.batch == 0:  # else a resumed epoch, finished with the weights it was planned with
        ctx.item_weights = merged_item_weights(plugins, ctx)
        if ctx.item_weights:
            report.log(f"epoch {epoch}: {len(ctx.item_weights)} image(s) sampled with a weight (e.g. hard_example_boost)")
    schedule = realise_epoch(
        ctx.data,
        epoch,
        seed=config.seed,
        batch_size=config.batch_size * accelerator.num_processes,
        resolution=config.resolution,
        item_weights=ctx.item_weights,
    )
    if config.write_schedule and accelerator.is_main_process:
        write_schedule(schedule, ctx.data, ctx.run.schedules)
    if epoch != state.planned_epoch and (changes or ctx.item_weights):
        state.total_steps = _replanned_steps(ctx, len(schedule), state.total_steps)
    report.event(
        "epoch",
        {
            "epoch": epoch,
            "batches": len(schedule),
            "samples": schedule.n_samples,
            "from_batch": position.batch,
            "total_steps": state.total_steps,
        },
    )
    return schedule


def _replanned_steps(ctx: Context, batches: int, planned: int) -> int:
    """The run's length re-counted at an epoch start whose epoch differs from the plan (a
    multiplier edited mid-run, per-image weights): steps done, this epoch's steps from its
    real schedule, later epochs' under the current settings. Progress and ETA follow it; the
    LR schedule keeps the length it was laid out for (it holds its end value past it)."""
    config, position = ctx.config, ctx.position
    later = preview_run(ctx.data, config, num_processes=ctx.accelerator.num_processes, lr=False).steps_per_epoch_all[position.epoch + 1 :]
    now = optimizer_steps(batches - position.batch, config.gradient_accumulation_steps)
    total = min(position.step + now + sum(later), config.max_steps or math.inf)
    if total != planned:
        ctx.report.log(f"epoch {position.epoch}: the run now takes {total} steps (planned: {planned})")
    return total
