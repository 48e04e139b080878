"""What the loop keeps between steps: the planned length, why it stopped, the last save,
the non-finite-loss rule, and each step's metrics.

A step's loss and non-finite flag stay on the device (see `edlib.train.step`): `record_step`
keeps them pending with the step's other metrics, and `flush` reads a whole window back in one
transfer on a logging step (every `log_every_n_steps`), before a save and at the end, then
applies the non-finite rule and reports each step in order. So metrics.jsonl still has every
step, the console and the live chart update once per window, and a run that keeps failing
stops at the logging step that shows it. images/s is measured over the window: wall time
from the last read-back to this one, after which the host has waited for the GPU."""

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
class PendingStep:
    """A step whose loss is still on the device."""

    metrics: dict[str, Any]
    loss: torch.Tensor
    nonfinite: torch.Tensor
    images: int


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
    pending: list[PendingStep] = field(default_factory=list)
    window_start: float = field(default_factory=time.time)  # the last read-back (or the start)


def check_finite(state: RunState, finite: bool, ctx: Context, step: int) -> None:
    """Count non-finite steps in a row: warn on each, stop the run after MAX_NONFINITE_STEPS."""
    if finite:
        state.nonfinite_in_a_row = 0
        return
    state.nonfinite_in_a_row += 1
    ctx.report.warning(f"step {step}: loss is NaN/inf, step skipped ({state.nonfinite_in_a_row} in a row)")
    if state.nonfinite_in_a_row >= MAX_NONFINITE_STEPS:
        raise TrainingError(
            f"loss was NaN/inf for {state.nonfinite_in_a_row} steps in a row at step {step}; "
            f"stopping. With mixed_precision fp16 this is usually an overflow: use bf16, or a "
            f"fp16-safe VAE (for SDXL: vae: madebyollin/sdxl-vae-fp16-fix); otherwise lower the "
            f"learning rate. Last good checkpoint: {state.last_saved}"
        )


def record_step(
    ctx: Context, state: RunState, lr_scheduler, batches: int, group_end: int, loss: torch.Tensor, nonfinite: torch.Tensor
) -> dict[str, Any]:
    """Advance the position past a step of `group_end` batches into an epoch of `batches`,
    and return the step's metrics; its loss, `skipped`, images/s and ETA are filled in by
    `flush`. Plugins may add metrics to the dict until then."""
    config, position = ctx.config, ctx.position
    world, epoch, group_size = ctx.accelerator.num_processes, position.epoch, group_end - position.batch
    position.step += 1
    position.batch = group_end
    position.samples += group_size * config.batch_size * world
    if position.batch == batches:
        position.epoch, position.batch = epoch + 1, 0
    lr = lr_scheduler.get_last_lr()[0]
    metrics = {
        "step": position.step,
        "epoch": epoch + group_end / batches,
        "loss": None,
        # a tensor (some optimizers keep it so, and update it in place) is copied now, read in `flush`
        "lr": lr.detach().clone() if isinstance(lr, torch.Tensor) else float(lr),
        "images_per_s": None,
        "eta_s": None,
        "samples": position.samples,
        "skipped": None,
        "time": time.time(),
    }
    state.pending.append(PendingStep(metrics, loss.detach(), nonfinite.detach(), group_size * config.batch_size * world))
    return metrics


def flush(ctx: Context, state: RunState) -> None:
    """Read the pending steps' losses back (one transfer; the mean over processes), apply the
    non-finite rule to each in order (which may stop the run) and report them."""
    if not state.pending:
        return
    pending, state.pending = state.pending, []
    lrs = [p.metrics["lr"] for p in pending]
    tensor_lrs = [lr.detach().reshape(()).to(pending[0].loss.device, torch.float32) for lr in lrs if isinstance(lr, torch.Tensor)]
    losses = torch.stack([p.loss.to(torch.float32) for p in pending])
    losses = ctx.accelerator.reduce(losses, "mean")
    values = torch.cat([losses, torch.stack([p.nonfinite.to(torch.float32) for p in pending]), *(t[None] for t in tensor_lrs)])
    values = values.tolist()  # the one host read of the window
    n = len(pending)
    window_losses, window_nonfinite, window_lrs = values[:n], values[n : 2 * n], iter(values[2 * n :])
    now = time.time()
    seconds = max(now - state.window_start, 1e-9)
    state.window_start = now
    images_per_s = sum(p.images for p in pending) / seconds
    for p, loss, bad in zip(pending, window_losses, window_nonfinite):
        finite = bad == 0
        check_finite(state, finite, ctx, p.metrics["step"])
        state.last_loss = loss if finite else float("nan")
        lr = p.metrics["lr"]
        p.metrics.update(
            loss=state.last_loss,
            lr=next(window_lrs) if isinstance(lr, torch.Tensor) else lr,
            images_per_s=images_per_s,
            eta_s=ctx.report.eta(p.metrics["step"], state.total_steps, seconds / n),
            skipped=not finite,
        )
        ctx.report.step(p.metrics)
