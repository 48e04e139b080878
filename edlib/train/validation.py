"""Validation loss: the loss on held-out images, measured the same way every time.

A training loss curve mixes three sources of noise: which images a step drew, which
timesteps, and which noise. A validation curve is only comparable across a run (and across
runs) when all three are fixed, so here every image is evaluated at the same fixed
timesteps (the midpoints of equal timestep ranges) with the same noise, drawn from a CPU
generator seeded by (seed, image path) alone. Nothing is drawn from the global RNGs, so
validating in the middle of training changes nothing about the training that follows.

The held-out set is either a separate data root (config `validation_data_root`) or a
fraction of each folder (`split_validation`, in the torch-free edlib.data.holdout so the
preview can show it; re-exported here), chosen per folder by a hash of (seed, path): the
same images are held out on every run with that seed, and adding or editing other
folders never changes a folder's choice.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edlib.data.buckets import assign_buckets, make_buckets
from edlib.data.holdout import _rank, describe_split, split_validation  # noqa: F401 (describe_split re-exported)
from edlib.data.images import ImageReadError
from edlib.data.types import ScanResult
from edlib.model.flow_config import flow_settings
from edlib.model.models import encode_images, encode_prompts, predict
from edlib.model.offload import encoders_on_device
from edlib.train.batches import load_pixels, micro_conditioning
from edlib.train.flow import NUM_TIMESTEPS, flow_loss
from edlib.train.hooks import Plugin
from edlib.train.noise import per_sample_loss, training_target


@dataclass(frozen=True)
class ValidationBatch:
    bucket: tuple[int, int]  # (width, height)
    items: tuple[int, ...]  # indices into the validation scan's items


def validation_batches(val: ScanResult, *, batch_size: int, resolution: int) -> list[ValidationBatch]:
    """Every validation image once, grouped by aspect bucket in path order; the last batch
    of a bucket may be short (no fill repeats, so every image weighs the same)."""
    buckets = make_buckets(resolution)
    widths = np.array([item.width for item in val.items], np.int64)
    heights = np.array([item.height for item in val.items], np.int64)
    assigned = assign_buckets(widths, heights, buckets) if len(val.items) else np.zeros(0, np.int64)
    out = []
    for b in sorted(set(assigned.tolist())):
        members = [i for i in range(len(val.items)) if assigned[i] == b]
        for start in range(0, len(members), batch_size):
            out.append(ValidationBatch(tuple(buckets[b]), tuple(members[start : start + batch_size])))
    return out


def fixed_timesteps(num_train_timesteps: int, count: int = 5) -> list[int]:
    """The midpoints of `count` equal timestep ranges: 100, 300, 500, 700, 900 for 1000/5."""
    return [int((2 * k + 1) * num_train_timesteps // (2 * count)) for k in range(count)]


@dataclass(frozen=True)
class ValidationResult:
    loss: float  # mean over images and timesteps (NaN when no image could be read)
    per_timestep: dict[int, float]  # timestep -> mean loss over images
    images: int
    skipped: tuple[str, ...] = ()  # "path: reason" of images that could not be read (gone, damaged)

    def metrics(self) -> dict[str, Any]:
        """Keys for metrics.jsonl: val_loss and val_loss_t{T} per fixed timestep."""
        return {"val_loss": self.loss, **{f"val_loss_t{t}": v for t, v in self.per_timestep.items()}, "val_images": self.images}


@torch.no_grad()
def validation_loss(
    models,
    val: ScanResult,
    batches: list[ValidationBatch],
    *,
    seed: int,
    timesteps: list[int] | None = None,
    clip_skip: int = 1,
    flow=None,
) -> ValidationResult:
    """The raw (unweighted, loss_scale-free) diffusion loss of every validation image at
    each fixed timestep, with noise seeded by (seed, path). Captions are used as written
    (no dropout, no shuffling). The UNet is evaluated in eval mode and put back as it was;
    wrap the call in `accelerator.autocast()` to validate in mixed precision. An image that
    cannot be read (quarantined mid-run, damaged) is left out and listed in `skipped`. SD3/FLUX
    (``flow``: the run's `FlowSettings`) are evaluated at sigma = timestep / 1000, on the raw
    velocity loss."""
    if not batches:
        raise ValueError("validation: no validation images (validation_fraction too small, or an empty validation_data_root)")
    scheduler = models.noise_scheduler
    timesteps = timesteps or fixed_timesteps(scheduler.config.num_train_timesteps)
    unet = models.unet
    was_training = unet.training
    unet.eval()
    sums = {t: 0.0 for t in timesteps}
    images, skipped = 0, []
    try:
        for batch in batches:
            items, loaded = [], []
            for i in batch.items:
                try:
                    loaded.append(load_pixels(Path(val.root) / val.items[i].path, batch.bucket, flip=False))
                    items.append(val.items[i])
                except ImageReadError as error:
                    skipped.append(f"{val.items[i].path}: {error.reason}")
            if not items:
                continue
            pixels = torch.stack(loaded)
            latents = encode_images(models, pixels).float()
            cond = encode_prompts(models, [item.caption.text() for item in items], clip_skip).to(torch.float32)
            if models.is_sdxl:
                cond = cond.with_time_ids(micro_conditioning(val, batch))
            noise = torch.stack([_fixed_noise(seed, item.path, latents.shape[1:]) for item in items]).to(latents.device)
            for t in timesteps:
                steps = torch.full((len(items),), t, dtype=torch.long, device=latents.device)
                if models.flow_matching:
                    sums[t] += flow_loss(models, latents, noise, steps / NUM_TIMESTEPS, cond, flow)[1].sum().item()
                    continue
                noisy = scheduler.add_noise(latents, noise, steps)
                prediction = predict(unet, noisy, steps, cond)
                sums[t] += per_sample_loss(prediction, training_target(scheduler, latents, noise, steps)).sum().item()
            images += len(items)
    finally:
        unet.train(was_training)
    per_timestep = {t: s / images if images else float("nan") for t, s in sums.items()}
    return ValidationResult(sum(per_timestep.values()) / len(per_timestep), per_timestep, images, tuple(skipped))


def _fixed_noise(seed: int, path: str, shape) -> torch.Tensor:
    """The same noise for an image every time, on every device (drawn on the CPU)."""
    generator = torch.Generator().manual_seed(_rank(seed, path) >> 1)
    return torch.randn(tuple(shape), generator=generator)


def validation_set(config, data: ScanResult) -> tuple[ScanResult, ScanResult | None]:
    """(training data, validation data or None) as the config asks: a separate
    `validation_data_root`, or `validation_fraction` of each folder held out of `data`."""
    if config.validation_data_root is not None:
        from edlib.data.scan import scan

        return data, scan(config.validation_data_root)
    if config.validation_fraction > 0:
        return split_validation(data, config.validation_fraction, config.seed)
    return data, None


class ValidationPlugin(Plugin):
    """Adds the validation loss to the step's metrics (metrics.jsonl and the live chart)
    every `validate_every_n_steps` steps and at the end of every `validate_every_n_epochs`
    epochs. Every process computes it on the same images (cheap, and no process waits)."""

    name = "validation"

    def __init__(self, val: ScanResult):
        self.val = val
        self._batches: list[ValidationBatch] = []
        self._warned: set[str] = set()

    def on_start(self, ctx) -> None:
        self._batches = validation_batches(self.val, batch_size=ctx.config.batch_size, resolution=ctx.config.resolution)
        ctx.report.log(f"validation: {len(self.val.items)} image(s)")

    def on_step(self, ctx, metrics: dict[str, Any]) -> None:
        config, position = ctx.config, ctx.position
        epoch_done = position.batch == 0
        due = (config.validate_every_n_steps and position.step % config.validate_every_n_steps == 0) or (
            epoch_done and config.validate_every_n_epochs and position.epoch % config.validate_every_n_epochs == 0
        )
        if not due:
            return
        # The plain UNet, not a DDP wrapper: only this process's forward, no collective.
        models = replace(ctx.models, unet=ctx.accelerator.unwrap_model(ctx.models.unet))
        with ctx.accelerator.autocast(), encoders_on_device(ctx):
            flow = flow_settings(config, models.family) if models.flow_matching else None
            result = validation_loss(models, self.val, self._batches, seed=config.seed, clip_skip=config.clip_skip, flow=flow)
        for skip in set(result.skipped) - self._warned:
            self._warned.add(skip)
            ctx.report.warning(f"validation: left out {skip}")
        metrics.update(result.metrics())
