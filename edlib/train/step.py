"""One optimizer step: per-sample losses of each batch of an accumulation group, their
backward passes, then the weight update, skipped when a loss was not finite.

Nothing here waits for the GPU (issue 16; `edlib.train.host_sync` counts it in a test): the
step's loss and its non-finite count stay on the device for `progress` to read back on a
logging step; the count is summed over processes on the device, so all skip together; and
the update is skipped on the device where the optimizer allows it (`edlib.model.nonfinite`;
otherwise one host read of the flag)."""

from __future__ import annotations

from contextlib import nullcontext

import torch
from accelerate import Accelerator

from edlib.data.schedule import EpochSchedule
from edlib.model.config import TrainConfig
from edlib.model.flow_config import flow_settings
from edlib.model.methods import Method
from edlib.model.models import predict
from edlib.model.nonfinite import skips_on_device, step_unless
from edlib.train.batches import BatchEncoder, local_batch, sample_generators
from edlib.train.flow import flow_sample_losses
from edlib.train.hooks import Context, Plugin
from edlib.train.noise import min_snr_weights, per_sample_loss, sample_noise, sample_timesteps, training_target
from edlib.train.setup import Training
from edlib.train.unreadable import UnreadableImages


def optimizer_step(
    ctx: Context,
    training: Training,
    encoder: BatchEncoder,
    schedule: EpochSchedule,
    epoch: int,
    group: range,
    plugins: list[Plugin],
    unreadable: UnreadableImages,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Train the batches `group` of `schedule` as one optimizer step (gradients summed, each
    batch's loss divided by the group size). Returns, as device tensors, the step's loss
    (this process's) and how many of its batches had a non-finite loss on any process; a step
    with any leaves the weights, optimizer and EMA as they were."""
    config, accelerator, models = ctx.config, ctx.accelerator, training.models
    world, rank = accelerator.num_processes, accelerator.process_index
    nonfinite = torch.zeros((), device=accelerator.device)
    loss = torch.zeros((), device=accelerator.device)
    for k, b in enumerate(group):
        # an image gone or undecodable since the scan is replaced by another of its bucket
        batch = unreadable.fill(encoder, ctx.data, local_batch(schedule.batch(b), epoch, rank, world), schedule)
        syncing = k == len(group) - 1  # DDP all-reduces gradients on the group's last backward only
        with nullcontext() if syncing else accelerator.no_sync(models.unet):
            with accelerator.autocast():
                losses, raw_losses, timesteps = sample_losses(models, encoder, ctx.data, batch, config)
            scale = encoder.loss_scale(ctx.data, batch)
            scaled = (losses if scale is None else losses * scale).mean() / len(group)
            nonfinite += (~torch.isfinite(scaled.detach())).to(nonfinite.dtype)
            # Always backward, also after a non-finite loss: every process must join DDP's
            # gradient all-reduce; the update is what gets skipped.
            accelerator.backward(scaled)
            loss += scaled.detach()
        for plugin in plugins:
            plugin.on_sample_losses(ctx, batch, timesteps, raw_losses.detach())
    if world > 1:
        nonfinite = accelerator.reduce(nonfinite, "sum")  # on the device: every process skips together
    update_weights(training, config, accelerator, nonfinite)
    training.optimizer.zero_grad(set_to_none=True)
    training.lr_scheduler.step()
    return loss, nonfinite


def update_weights(training: Training, config: TrainConfig, accelerator: Accelerator, nonfinite: torch.Tensor) -> None:
    """The optimizer and EMA step, skipped when `nonfinite` > 0: on the device where the
    optimizer takes a `found_inf` flag, else after one host read of the flag."""
    skip = None
    if skips_on_device(training.optimizer, accelerator.scaler):
        skip = nonfinite > 0
    elif nonfinite.item() > 0:
        return
    average_gradients(training.method, training.models, accelerator)
    if config.max_grad_norm:
        accelerator.clip_grad_norm_(training.trainable, config.max_grad_norm)
    if skip is None:
        training.optimizer.step()
    else:
        step_unless(training.optimizer, skip)
    if training.ema is not None:
        training.ema.step(training.trainable, skip)


def sample_losses(models, encoder: BatchEncoder, data, batch, config: TrainConfig):
    """Per-sample losses (B,) of one batch: weighted (min-SNR) for training, raw for the
    loss tracker, and the timesteps drawn. Noise and timesteps come from the samples' own
    generators (see edlib.train.noise)."""
    latents, cond = encoder.encode(data, batch, config.seed)
    generators = sample_generators(config.seed, batch, "noise", latents.device)
    noise = sample_noise(
        latents,
        generators,
        noise_offset=config.noise_offset,
        multires_iterations=config.multires_noise_iterations,
        multires_discount=config.multires_noise_discount,
    )
    if models.flow_matching:  # SD3, FLUX: sigma, velocity (edlib.train.flow)
        return flow_sample_losses(models, latents, noise, cond, generators, flow_settings(config, models.family))
    scheduler = models.noise_scheduler
    timesteps = sample_timesteps(scheduler, generators, device=latents.device)
    noisy = scheduler.add_noise(latents, noise, timesteps)
    if config.channels_last:
        noisy = noisy.contiguous(memory_format=torch.channels_last)
    prediction = predict(models.unet, noisy, timesteps, cond)
    raw = per_sample_loss(prediction, training_target(scheduler, latents, noise, timesteps))
    if not config.min_snr_gamma:
        return raw, raw, timesteps
    return raw * min_snr_weights(scheduler, timesteps, config.min_snr_gamma).to(raw.device), raw, timesteps


def average_gradients(method: Method, models, accelerator: Accelerator) -> None:
    """Average the gradients of trainable modules DDP does not wrap (see `setup.place_models`)."""
    if accelerator.num_processes == 1:
        return
    for name, module in method.trainable_modules(models).items():
        if name == "unet":
            continue
        for param in module.parameters():
            if param.grad is not None:
                param.grad = accelerator.reduce(param.grad, "mean")
