"""Sampling during training: a training-loop `Plugin` that makes sample images every N steps,
every N epochs, every N minutes, at the end of the run, and when asked (``control/sample`` or
`RunHandle.sample_now`).

Images come from the live training modules (EMA weights swapped in when the run keeps one),
assembled into a pipeline for the event and dropped afterwards, so sampling loads nothing and
keeps no second reference to any module. Encoders the run keeps in CPU memory (see
`edlib.model.offload`) are on the training device for the event and back after it.
`sample_images` leaves training as it was (modes, weights, every global RNG stream), so a run
with samples trains exactly as one without.

Only the main process samples; the others wait at a barrier, so all processes leave the event
together. Each event writes ``samples/step-NNNNNN/`` (one PNG per prompt and ``grid.png``) and
reports a "sample" event with the grid's path, for the notebook to show. While it draws, it
reports "sampling" events (`done` of `total` images, and `why`: "cadence", "request" or "end"),
so a notebook can say what the run is doing during the minutes a real model takes.

A run stopped by a stop request skips its end samples: whoever pressed Stop wants the run
over, and `edlib sample RUN --prompts FILE` (or notebook 04) draws them from the last
checkpoint later. A run
that ends by its epochs or `max_steps` samples at its end as `sample_at_end` says.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast_object_list

from edlib.model.config import TrainConfig
from edlib.model.ema import ema_weights
from edlib.model.offload import encoders_on_device
from edlib.sample.generate import GRID_NAME, sample_images
from edlib.sample.pipeline import pipeline_from_models
from edlib.sample.prompts import PromptSpec, prompt_specs
from edlib.train.hooks import Context, Plugin

SAMPLES_DIR = "samples"
_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


class SamplingPlugin(Plugin):
    """Sample ``prompts`` from the training weights on the cadences given (None: off).

    At most one event per optimizer step: a step that is due by several cadences (or also
    asked for by a request) samples once."""

    name = "sampling"

    def __init__(
        self,
        prompts: Sequence[PromptSpec],
        *,
        every_n_steps: int | None = None,
        every_n_epochs: int | None = None,
        every_n_minutes: float | None = None,
        at_end: bool = True,
    ):
        if not prompts:
            raise ValueError("SamplingPlugin: no prompts to sample")
        self.prompts = list(prompts)
        self.every_n_steps = every_n_steps
        self.every_n_epochs = every_n_epochs
        self.every_n_minutes = every_n_minutes
        self.at_end = at_end
        self._sampled_step: int | None = None  # the step of the last event
        self._last_time = time.time()  # wall clock of the last event (or of the start)
        self._resumed = False  # the clock and last step came from a checkpoint

    @classmethod
    def from_config(cls, config: TrainConfig) -> SamplingPlugin | None:
        """The plugin a training config asks for, or None when it has no ``sample_prompts``.
        A bad prompt file fails here, before any model is loaded."""
        if not config.sample_prompts:
            return None
        return cls(
            prompt_specs(config.sample_prompts),
            every_n_steps=config.sample_every_n_steps,
            every_n_epochs=config.sample_every_n_epochs,
            every_n_minutes=config.sample_every_n_minutes,
            at_end=config.sample_at_end,
        )

    # -- loop hooks --------------------------------------------------------------------------

    def on_start(self, ctx: Context) -> None:
        if not self._resumed:  # a resumed run keeps its clock (see `load_state_dict`)
            self._last_time, self._sampled_step = time.time(), None
        self._resumed = False

    def on_step(self, ctx: Context, metrics: dict[str, Any]) -> None:
        step_due = bool(self.every_n_steps) and ctx.position.step % self.every_n_steps == 0
        if step_due or self._minutes_due(ctx):
            self._sample(ctx, "cadence")

    def on_epoch_end(self, ctx: Context) -> None:
        if self.every_n_epochs and ctx.position.epoch % self.every_n_epochs == 0:
            self._sample(ctx, "cadence")

    def on_end(self, ctx: Context) -> None:
        if not self.at_end:
            return
        if ctx.stopped_by == "stop request":  # see the module docstring
            if self._sampled_step != ctx.position.step:
                ctx.report.log(
                    f"step {ctx.position.step}: end samples skipped (stopped by request); "
                    f"draw them later with: edlib sample {ctx.run.path} --prompts FILE (or in notebook 04)"
                )
            return
        self._sample(ctx, "end")

    def sample(self, ctx: Context) -> bool:
        self._sample(ctx, "request")
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"seconds_since_sample": time.time() - self._last_time, "sampled_step": self._sampled_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue a checkpoint's minute clock, so the next timed sample after a resume
        comes when it would have without the interruption."""
        if state:
            self._last_time = time.time() - float(state["seconds_since_sample"])
            self._sampled_step = state["sampled_step"]
            self._resumed = True

    # -- sampling ----------------------------------------------------------------------------

    def _minutes_due(self, ctx: Context) -> bool:
        """Whether the minute cadence is due, decided by the main process and shared: every
        process must take part in the same events (they meet at the barrier)."""
        if not self.every_n_minutes:
            return False
        decision = [time.time() - self._last_time >= self.every_n_minutes * 60]
        if ctx.accelerator.num_processes > 1:
            broadcast_object_list(decision)
        return decision[0]

    def _sample(self, ctx: Context, why: str) -> None:
        step = ctx.position.step
        if self._sampled_step == step:
            return
        self._sampled_step = step
        self._last_time = time.time()
        accelerator = ctx.accelerator
        if accelerator.is_main_process:

            def progress(done: int, total: int) -> None:
                ctx.report.event("sampling", {"step": step, "done": done, "total": total, "why": why})

            progress(0, len(self.prompts))
            grid = self._write_samples(ctx, progress)
            ctx.report.log(f"step {step}: sampled {len(self.prompts)} prompt(s) to {grid.parent}")
            ctx.report.event("sample", {"step": step, "path": str(grid)})
        accelerator.wait_for_everyone()

    def _write_samples(self, ctx: Context, progress: Callable[[int, int], None]) -> Path:
        """Sample every prompt from the live modules into ``samples/step-NNNNNN/``; returns
        the grid's path."""
        models, step = ctx.models, ctx.position.step
        pipeline = pipeline_from_models(
            models,
            unet=ctx.accelerator.unwrap_model(models.unet, keep_torch_compile=False),
            clip_skip=ctx.config.clip_skip,  # samples see the text encoder layer the UNet trains on
        )
        # Offloaded encoders come to the training device for the event only: sampling needs
        # no more memory than a training step's (the gradients are freed by now).
        with ema_weights(ctx.ema, ctx.method.trainable_parameters(models)), encoders_on_device(ctx):
            paths = sample_images(
                pipeline,
                self.prompts,
                ctx.run.path / SAMPLES_DIR,
                step=step,
                model_name=f"{ctx.run.path.name} step-{step:06d}",
                autocast_dtype=_AUTOCAST_DTYPES.get(ctx.config.mixed_precision),
                on_image=progress,
            )
        del pipeline  # holds only references to the training modules; nothing outlives the event
        return paths[0].parent / GRID_NAME
