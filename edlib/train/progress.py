"""What the loop keeps between steps: the planned length, why it stopped, the last save,
the non-finite-loss rule, and each step's metrics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from edlib.train.hooks import Context

# Non-finite losses in a row before the run gives up (one is skipped with a warning: fp16
# runs hit an occasional overflow; many in a row means the run has diverged).
MAX_NONFINITE_STEPS = 5


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss keeps overflowing); the message says what to change."""


@dataclass
class RunState:
    total_steps: int  # the run's length as now planned (progress, ETA; the LR schedule keeps its own)
    planned_epoch: int | None  # the epoch whose settings are loaded as planned (not re-read at its start)
    # After a mid-epoch resume, the resumed epoch's saved image list may hold images that are
    # gone: the next epoch re-reads from this fresh scan (with the epoch's settings) instead.
    next_data: Any = None
    stopped_by: str = "epochs"  # "epochs", "max_steps" or "stop request"
    last_saved: Path | None = None
    last_save_time: float = field(default_factory=time.time)
    last_loss: float | None = None
    nonfinite_in_a_row: int = 0


def check_finite(state: RunState, finite: bool, ctx: Context) -> None:
    """Count non-finite steps in a row: warn on each, stop the run after MAX_NONFINITE_STEPS."""
    if finite:
        state.nonfinite_in_a_row = 0
        return
    state.nonfinite_in_a_row += 1
    step = ctx.position.step + 1
    ctx.report.warning(f"step {step}: loss is NaN/inf, step skipped ({state.nonfinite_in_a_row} in a row)")
    if state.nonfinite_in_a_row >= MAX_NONFINITE_STEPS:
        raise TrainingError(
            f"loss was NaN/inf for {state.nonfinite_in_a_row} steps in a row at step {step}; "
            f"stopping. With mixed_precision fp16 this is usually an overflow: use bf16, or a "
            f"fp16-safe VAE (for SDXL: vae: madebyollin/sdxl-vae-fp16-fix); otherwise lower the "
            f"learning rate. Last good checkpoint: {state.last_saved}"
        )


def record_step(
    ctx: Context, state: RunState, lr_scheduler, batches: int, group_end: int, loss: torch.Tensor, finite: bool, started: float
) -> dict[str, Any]:
    """Advance the position past a step of `group_end` batches into an epoch of `batches`,
    and return the step's metrics."""
    config, accelerator, position = ctx.config, ctx.accelerator, ctx.position
    world, epoch, group_size = accelerator.num_processes, position.epoch, group_end - position.batch
    position.step += 1
    position.batch = group_end
    position.samples += group_size * config.batch_size * world
    if position.batch == batches:
        position.epoch, position.batch = epoch + 1, 0
    now = time.time()
    state.last_loss = accelerator.reduce(loss, "mean").item() if finite else float("nan")
    return {
        "step": position.step,
        "epoch": epoch + group_end / batches,
        "loss": state.last_loss,
        "lr": float(lr_scheduler.get_last_lr()[0]),  # torchao keeps it as a tensor
        "images_per_s": group_size * config.batch_size * world / max(now - started, 1e-9),
        "eta_s": ctx.report.eta(position.step, state.total_steps, now - started),
        "samples": position.samples,
        "skipped": not finite,
        "time": now,
    }
