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

The mechanics live in small modules: `methods` (what trains), `batches` (batch -> tensors),
`noise` (noise, targets, per-sample loss), `checkpoint`, `run_dir`. Later features plug in
as a `Method` (LoRA, textual inversion) or a `Plugin` (sampling, per-image loss tracking).
"""

from __future__ import annotations

import importlib.util
import math
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast_object_list, set_seed
from tqdm.auto import tqdm

from edlib.data.preview import optimizer_steps, preview
from edlib.data.scan import reread_settings, scan
from edlib.data.schedule import realise_epoch, write_schedule
from edlib.data.types import DataRootError, ScanResult
from edlib.train import checkpoint as ckpt
from edlib.train.batches import BatchEncoder, LocalBatch, batch_loss_scale, local_batch, sample_generators
from edlib.train.config import RESUME_IMMUTABLE_KEYS, ConfigError, TrainConfig, diff_configs
from edlib.train.ema import make_ema
from edlib.train.lr import make_lr_scheduler
from edlib.train.methods import Method, make_method
from edlib.train.models import enable_gradient_checkpointing, load_models, predict
from edlib.train.noise import min_snr_weights, per_sample_loss, sample_noise, sample_timesteps, training_target
from edlib.train.offload import home_device
from edlib.train.optim import make_optimizer
from edlib.train.run_dir import Event, Reporter, RunDir

# Non-finite losses in a row before the run gives up (one is skipped with a warning: fp16
# runs hit an occasional overflow; many in a row means the run has diverged).
MAX_NONFINITE_STEPS = 5


@dataclass
class RunSummary:
    run_dir: Path
    step: int
    epoch: int
    stopped_by: str  # "epochs", "max_steps" or "stop request"
    last_checkpoint: Path | None
    last_loss: float | None
    exports: list[Path] = field(default_factory=list)  # written at the end (`export_formats`)


class TrainingError(RuntimeError):
    """The run cannot go on (e.g. the loss keeps overflowing); the message says what to change."""


@dataclass
class Position:
    """Where a run is: `batch` is the next batch of `epoch` to train; `step` counts
    optimizer steps done; `samples` counts samples trained (all processes)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    samples: int = 0


@dataclass
class Context:
    """What a plugin may look at (and, for sampling, use) between steps."""

    config: TrainConfig
    accelerator: Accelerator
    run: RunDir
    models: Any
    method: Method
    position: Position
    ema: Any | None
    data: ScanResult  # the scan with the current epoch's folder settings
    report: Reporter  # for a plugin's own events and log lines (e.g. "sample")
    item_weights: dict[str, float] | None = None  # the current epoch's per-image sampling weights


class Plugin:
    """A hook into the loop for later features (sampling, per-image loss tracking).

    `name` keys the plugin's `state_dict()` in checkpoints (tensors and plain containers
    only); every hook is optional."""

    name = "plugin"

    def on_start(self, ctx: Context) -> None: ...

    def item_weights(self, ctx: Context) -> dict[str, float] | None:
        """Per-image sampling weights (path -> factor) for the epoch about to start, asked
        at each epoch start; the loop multiplies the answers of all plugins. A factor w
        makes an image's samples w times what its folder's multiplier gives it (see
        edlib.data.schedule). None: no change. All processes must answer the same."""
        return None

    def on_sample_losses(self, ctx: Context, batch: LocalBatch, timesteps: torch.Tensor, losses: torch.Tensor) -> None:
        """Per-sample losses (B,) of this process's part of a batch (`batch.items` index the
        scan's images), before min-SNR weighting and loss_scale."""

    def on_step(self, ctx: Context, metrics: dict[str, Any]) -> None:
        """After each optimizer step, before its metrics are reported: may add metrics."""

    def on_epoch_end(self, ctx: Context) -> None: ...

    def on_end(self, ctx: Context) -> None:
        """Training is over (epochs done, max_steps reached or stopped), before the last save."""

    def sample(self, ctx: Context) -> bool:
        """Serve a "sample now" request; return True if handled."""
        return False

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


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
    an earlier process and dropped; `start` passes the time it was called."""
    # Imported here: the plugins subclass this module's Plugin.
    from edlib.train.plugins import default_plugins
    from edlib.train.validation import validation_set

    accelerator = _accelerator(config)
    run = RunDir(config.run_dir, writer=accelerator.is_main_process)
    report = Reporter(run, callbacks, accelerator, config)
    run.clear_stale_requests(before=requested_at or time.time())
    set_seed(config.seed, device_specific=True)

    # Data first (bad input fails before any model loads), then the plugins it implies.
    data = scan(config.data_root)
    if data.errors:
        raise DataRootError(f"data root {config.data_root} has errors:\n  " + "\n  ".join(data.errors))
    for warning in data.warnings:
        report.warning(warning)
    data, validation = validation_set(config, data)
    given = {plugin.name for plugin in plugins}
    plugins = [*plugins, *(plugin for plugin in default_plugins(config, validation) if plugin.name not in given)]

    # Models, optimizer, LR schedule, EMA.
    models = load_models(
        config.model,
        prediction_type=config.prediction_type,
        zero_terminal_snr=config.zero_terminal_snr,
        attention=config.attention,
        vae=config.vae,
    )
    if config.text_encoder_2_lr is not None and not models.is_sdxl:
        report.warning(f"text_encoder_2_lr is set, but {config.model} has one text encoder (SDXL has two): ignored")
    if config.full_bf16 and not config.stochastic_rounding:
        report.warning(
            "full_bf16 with stochastic_rounding: false: weight updates under half a bf16 step (about 1/512 of a "
            f"weight) are rounded away, so at unet_lr {config.unet_lr:g} many weights may not move; watch the samples"
        )
    method = make_method(config)
    method.setup(models)
    _place_models(models, method, config, accelerator)  # before the optimizer: fused AdamW needs CUDA params
    optimizer = make_optimizer(
        config.optimizer,
        method.param_groups(models),
        config.optimizer_args,
        stochastic_rounding=config.full_bf16 and config.stochastic_rounding,
    )
    total_steps = planned_steps(data, config, accelerator.num_processes)
    lr_scheduler = make_lr_scheduler(
        optimizer,
        config.lr_scheduler,
        total_steps=total_steps,
        warmup_steps=config.lr_warmup_steps,
        num_cycles=config.lr_num_cycles,
        power=config.lr_power,
    )
    trainable = method.trainable_parameters(models)
    ema = make_ema(config.ema_decay, trainable)

    # Fresh start, a new phase from another run's weights, or an exact resume.
    position, epoch_settings, epoch_weights = _begin(
        config, resume, run, report, method, models, optimizer, lr_scheduler, ema, accelerator, plugins
    )
    if position.batch > 0:  # mid-epoch: finish the epoch with the settings and weights it was planned with
        data = ckpt.with_folder_settings(data, epoch_settings)
    optimizer = accelerator.prepare(optimizer)
    encoder = BatchEncoder(
        models,
        config,
        text_encoder_trains=method.text_encoder_trains(models),
        cache_dir=run.path / "cache",
        prepare_captions=method.prepare_captions,
        device=accelerator.device,
    )
    ctx = Context(config, accelerator, run, models, method, position, ema, data, report)
    for plugin in plugins:
        plugin.on_start(ctx)
    report.event("start", {"total_steps": total_steps, **asdict(position)})

    world, rank = accelerator.num_processes, accelerator.process_index
    accumulation = config.gradient_accumulation_steps
    bar = tqdm(
        total=total_steps, initial=position.step, disable=not _show_bar(progress_bar, accelerator), unit="step", desc="training"
    )
    first_epoch, nonfinite_in_a_row, last_saved = position.epoch, 0, None
    stopped_by = "max_steps" if position.step >= (config.max_steps or math.inf) else "epochs"
    last_loss, last_save_time = None, time.time()

    while position.epoch < config.epochs and stopped_by == "epochs":
        epoch, changes = position.epoch, []
        if epoch != first_epoch:  # settings edited during the last epoch apply from now on
            data, changes = reread_settings(data)
            ctx.data = data
            for change in changes:
                report.log(f"epoch {epoch}: {change}")
        if position.batch == 0:  # else a resumed epoch, finished with the weights it was planned with
            epoch_weights = _item_weights(plugins, ctx)
            if epoch_weights:
                report.log(f"epoch {epoch}: {len(epoch_weights)} image(s) sampled with a weight (e.g. hard_example_boost)")
        ctx.item_weights = epoch_weights
        schedule = realise_epoch(
            data,
            epoch,
            seed=config.seed,
            batch_size=config.batch_size * world,
            resolution=config.resolution,
            item_weights=epoch_weights,
        )
        if config.write_schedule and accelerator.is_main_process:
            write_schedule(schedule, data, run.schedules)
        if epoch != first_epoch and (changes or epoch_weights):
            total_steps = _replanned_steps(data, config, world, position, len(schedule), total_steps, report)
            bar.total = total_steps
        report.event(
            "epoch",
            {
                "epoch": epoch,
                "batches": len(schedule),
                "samples": schedule.n_samples,
                "from_batch": position.batch,
                "total_steps": total_steps,
            },
        )

        for start in range(position.batch, len(schedule), accumulation):
            step_start = time.time()
            group = range(start, min(start + accumulation, len(schedule)))
            finite, loss = True, torch.zeros((), device=accelerator.device)
            for k, b in enumerate(group):
                batch = local_batch(schedule.batch(b), epoch, rank, world)
                syncing = k == len(group) - 1
                with nullcontext() if syncing else accelerator.no_sync(models.unet):
                    with accelerator.autocast():
                        losses, raw_losses, timesteps = _sample_losses(models, encoder, data, batch, config)
                    scaled = (losses * batch_loss_scale(data, batch).to(losses.device)).mean() / len(group)
                    finite = finite and _all_finite(scaled, accelerator)
                    if finite:
                        accelerator.backward(scaled)
                        loss += scaled.detach()
                for plugin in plugins:
                    plugin.on_sample_losses(ctx, batch, timesteps, raw_losses.detach())

            if finite:
                nonfinite_in_a_row = 0
                _average_gradients(method, models, accelerator)
                if config.max_grad_norm:
                    accelerator.clip_grad_norm_(trainable, config.max_grad_norm)
                optimizer.step()
                if ema is not None:
                    ema.step(trainable)
            else:
                nonfinite_in_a_row += 1
                report.warning(f"step {position.step + 1}: loss is NaN/inf, step skipped ({nonfinite_in_a_row} in a row)")
                if nonfinite_in_a_row >= MAX_NONFINITE_STEPS:
                    raise TrainingError(
                        f"loss was NaN/inf for {nonfinite_in_a_row} steps in a row at step {position.step + 1}; "
                        f"stopping. With mixed_precision fp16 this is usually an overflow: use bf16, or a "
                        f"fp16-safe VAE (for SDXL: vae: madebyollin/sdxl-vae-fp16-fix); otherwise lower the "
                        f"learning rate. Last good checkpoint: {last_saved}"
                    )
            optimizer.zero_grad(set_to_none=True)
            lr_scheduler.step()

            # Bookkeeping: position, metrics, requests, saves.
            position.step += 1
            position.batch = group.stop
            position.samples += len(group) * config.batch_size * world
            epoch_done = position.batch == len(schedule)
            if epoch_done:
                position.epoch, position.batch = epoch + 1, 0
            now = time.time()
            last_loss = accelerator.reduce(loss, "mean").item() if finite else float("nan")
            metrics = {
                "step": position.step,
                "epoch": epoch + group.stop / len(schedule),
                "loss": last_loss,
                "lr": float(lr_scheduler.get_last_lr()[0]),  # torchao keeps it as a tensor
                "images_per_s": len(group) * config.batch_size * world / max(now - step_start, 1e-9),
                "eta_s": report.eta(position.step, total_steps, now - step_start),
                "samples": position.samples,
                "skipped": not finite,
                "time": now,
            }
            for plugin in plugins:  # before reporting: a plugin may add metrics (validation loss)
                plugin.on_step(ctx, metrics)
            report.step(metrics)
            bar.update(1)
            bar.set_postfix_str(f"loss {last_loss:.4f}, {metrics['images_per_s']:.1f} images/s, epoch {epoch}")

            requests, minutes_due = _agree(run, accelerator, config, now - last_save_time)
            if "sample" in requests and not any(p.sample(ctx) for p in plugins):
                report.event("sample_request", {"step": position.step, "served": False})
                report.log("sample request received: no sampler is configured for this run, ignored")
            if position.step >= (config.max_steps or math.inf):
                stopped_by = "max_steps"
            elif "stop" in requests:
                stopped_by = "stop request"
            save_due = (
                "save" in requests
                or minutes_due
                or stopped_by != "epochs"
                or (config.save_every_n_steps and position.step % config.save_every_n_steps == 0)
                or (epoch_done and config.save_every_n_epochs and position.epoch % config.save_every_n_epochs == 0)
            )
            if save_due and nonfinite_in_a_row:
                report.log(f"step {position.step}: checkpoint not saved while the loss is NaN/inf")
            elif save_due:
                last_saved = _save(ctx, report, optimizer, lr_scheduler, plugins)
                last_save_time = time.time()
            for name in requests:
                run.clear_request(name)
            if stopped_by != "epochs":
                break
        if position.epoch > epoch:
            for plugin in plugins:
                plugin.on_epoch_end(ctx)

    for plugin in plugins:
        plugin.on_end(ctx)
    if last_saved is None or ckpt.checkpoint_step(last_saved) != position.step:
        last_saved = _save(ctx, report, optimizer, lr_scheduler, plugins)
    bar.close()
    exports = _export_at_end(ctx, last_saved)
    report.event("done", {"step": position.step, "epoch": position.epoch, "stopped_by": stopped_by})
    report.log(f"training ended at step {position.step} ({stopped_by}); last checkpoint {last_saved}")
    accelerator.end_training()
    return RunSummary(Path(config.run_dir), position.step, position.epoch, stopped_by, last_saved, last_loss, exports)


# -- helpers ------------------------------------------------------------------------------


def _accelerator(config: TrainConfig) -> Accelerator:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another
    mixed precision; a notebook may well train twice in one kernel (fp16, then bf16). In a
    single process nothing else depends on that state, so it is reset first; the process
    group of a multi-process launch (PartialState) is left alone."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard), or set it to false")
    process_state = PartialState._shared_state  # read without creating it: creating decides the backend
    if process_state and process_state.get("num_processes", 1) == 1:
        AcceleratorState._reset_state()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(config.run_dir),
    )


def planned_steps(data, config: TrainConfig, num_processes: int = 1) -> int:
    """Optimizer steps the LR schedule is laid out for: exactly what the preview shows
    (ceil(batches / accumulation) per epoch, summed, capped by max_steps)."""
    return _preview(data, config, num_processes).total_steps


def _preview(data, config: TrainConfig, num_processes: int):
    return preview(
        data,
        epochs=config.epochs,
        batch_size=config.batch_size * num_processes,
        resolution=config.resolution,
        seed=config.seed,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        max_steps=config.max_steps,
    )


def _replanned_steps(data, config: TrainConfig, world: int, position: Position, batches: int, planned: int, report) -> int:
    """The run's length re-counted at an epoch start whose epoch differs from the plan (a
    multiplier edited mid-run, per-image weights): steps done, this epoch's steps from its
    real schedule, later epochs' under the current settings. Progress and ETA follow it; the
    LR schedule keeps the length it was laid out for (it holds its end value past it)."""
    later = _preview(data, config, world).steps_per_epoch_all[position.epoch + 1 :]
    now = optimizer_steps(batches - position.batch, config.gradient_accumulation_steps)
    total = min(position.step + now + sum(later), config.max_steps or math.inf)
    if total != planned:
        report.log(f"epoch {position.epoch}: the run now takes {total} steps (planned: {planned})")
    return total


def _item_weights(plugins: Sequence[Plugin], ctx: Context) -> dict[str, float] | None:
    """The plugins' per-image weights for the next epoch, multiplied together."""
    merged: dict[str, float] = {}
    for plugin in plugins:
        for path, factor in (plugin.item_weights(ctx) or {}).items():
            merged[path] = merged.get(path, 1.0) * factor
    return merged or None


def _sample_losses(models, encoder: BatchEncoder, data, batch, config: TrainConfig):
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


def _export_at_end(ctx: Context, checkpoint: Path) -> list[Path]:
    """Export the run's result in `config.export_formats` from the modules in memory (no
    second copy of the model), the EMA weights put in when the run keeps them: the training
    weights are saved in `checkpoint` and not needed again. Main process only. A failed
    export is a warning, not a lost run: the checkpoint is complete and `edlib export`
    retries from it."""
    config, accelerator, report = ctx.config, ctx.accelerator, ctx.report
    written: list[Path] = []
    if accelerator.is_main_process and config.exports_at_end():
        from edlib.export.run import export_models  # edlib.export imports edlib.train

        if ctx.ema is not None:
            ctx.ema.copy_to(ctx.method.trainable_parameters(ctx.models))
        models = replace(ctx.models, unet=accelerator.unwrap_model(ctx.models.unet, keep_torch_compile=False))
        for format in config.exports_at_end():
            try:
                paths = export_models(
                    models,
                    ctx.method,
                    config,
                    format,
                    out_dir=ctx.run.path / "exports",
                    run_name=ctx.run.path.name,
                    step=ctx.position.step,
                    dtype=config.export_dtype,
                )
            except Exception as error:  # noqa: BLE001 - the run is saved; say how to retry
                report.warning(
                    f"export {format} failed: {error}. The run is saved ({checkpoint}); "
                    f"retry with: edlib export {ctx.run.path} --format {format}"
                )
                continue
            for path in paths:
                report.log(f"exported {format}: {path}")
                report.event("export", {"format": format, "path": str(path), "step": ctx.position.step})
            written += paths
    accelerator.wait_for_everyone()
    return written


def _begin(config, resume, run, report, method, models, optimizer, lr_scheduler, ema, accelerator, plugins):
    """Load what a resume or a new phase needs and write the run folder's config. Returns
    the position to start from and, on resume, the folder settings and per-image weights
    its epoch was planned with (see `checkpoint.folder_settings`)."""
    if resume is None:
        existing = ckpt.list_checkpoints(run.checkpoints)
        if existing:
            raise ckpt.CheckpointError(
                f"run folder {run.path} already holds checkpoints (newest {existing[-1].name}); "
                f"resume it (--resume latest) or choose another run_dir"
            )
        phase = {"model": config.model, "init_from": None}
        if config.init_from is not None:
            parent = ckpt.load_checkpoint(ckpt.resolve_checkpoint(config.init_from), with_state=False)
            method.init_weights(models, parent.weights, unwrap=_unwrapper(accelerator))
            phase.update(ckpt.parent_phase(parent.path))
            report.log(f"new phase from {parent.path} (weights only; fresh optimizer and schedule)")
        run.truncate_metrics(after_step=0)
        run.write_phase(phase)
        run.write_config(config.model_dump(mode="json"))
        report.log(f"training {config.model} on {config.data_root} into {run.path}")
        return Position(), None, None

    path = ckpt.resolve_checkpoint(resume, run.path)
    saved = ckpt.load_checkpoint(path, process_index=accelerator.process_index)
    immutable, mutable = diff_configs(TrainConfig.from_dict(saved.state["config"]), config)
    if immutable:
        lines = [f"{key}: {old!r} -> {new!r} ({RESUME_IMMUTABLE_KEYS[key]})" for key, (old, new) in immutable.items()]
        raise ConfigError(
            f"cannot resume {path} with a changed config; these keys are fixed on resume:\n  "
            + "\n  ".join(lines)
            + "\nrevert them, or start a new phase with init_from"
        )
    method.load_weights(models, saved.weights, unwrap=_unwrapper(accelerator))
    optimizer.load_state_dict(saved.state["optimizer"])
    lr_scheduler.load_state_dict(saved.state["lr_scheduler"])
    if accelerator.scaler is not None and saved.state.get("scaler"):
        accelerator.scaler.load_state_dict(saved.state["scaler"])
    if ema is not None:
        ema.load_state_dict(saved.state["ema"])
    for plugin in plugins:
        plugin.load_state_dict(saved.state["plugins"].get(plugin.name, {}))
    if saved.rng is not None:
        ckpt.restore_rng_state(saved.rng)
    else:
        report.warning(f"{path} has no RNG state for process {accelerator.process_index}; continuing with fresh RNG")
    position = Position(**saved.state["position"])
    run.truncate_metrics(after_step=position.step)
    run.write_config(config.model_dump(mode="json"))
    report.log(f"resumed from {path} at step {position.step} (epoch {position.epoch}, batch {position.batch})")
    for key, (old, new) in mutable.items():
        report.log(f"config change on resume: {key}: {old!r} -> {new!r}")
    return position, saved.state["folder_settings"], saved.state.get("item_weights")


def _place_models(models, method: Method, config: TrainConfig, accelerator: Accelerator) -> None:
    """Trainable modules stay fp32 (autocast lowers their matmuls), or bf16 with `full_bf16`;
    frozen ones go in the mixed-precision dtype (half the memory) in eval mode, except a VAE
    that overflows in fp16 (SDXL's: its config says `force_upcast`), which stays fp32 under
    fp16 unless the model's VAE is an fp16-safe one. Frozen modules go to the device, or stay
    in CPU memory when the run caches all they compute (`edlib.train.offload`).

    Only the UNet is wrapped by accelerate (DDP on several processes). A training text
    encoder is not: `encode_prompts` needs the plain module, so its gradients are averaged
    across processes by `_average_gradients` instead of by DDP."""
    trainable = method.trainable_modules(models)
    trained_dtype = torch.bfloat16 if config.full_bf16 else None
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(models, text_encoders=tuple(n for n in models.text_encoder_names if n in trainable))
    for name in models.module_names:
        module = getattr(models, name)
        if name == "unet" and config.channels_last:  # its inputs follow in `_sample_losses`
            module.to(memory_format=torch.channels_last)
        if name not in trainable:
            device = home_device(name, config, models, accelerator.device)
            module.to(device, dtype=frozen_dtype(name, module, config.mixed_precision)).eval()
        elif name == "unet":
            unet = accelerator.prepare(module.to(dtype=trained_dtype).train())
            # Compiled last, around the DDP wrapper; accelerate's unwrap_model sees through
            # both when the checkpoint takes the plain module's weights.
            setattr(models, name, torch.compile(unet) if config.compile else unet)
        else:
            module.to(accelerator.device, dtype=trained_dtype).train()


def frozen_dtype(name: str, module: torch.nn.Module, mixed_precision: str) -> torch.dtype | None:
    """The dtype a frozen module is kept in (None: as loaded): the mixed-precision dtype,
    except a VAE whose config asks diffusers to upcast it (`force_upcast`: SDXL's VAE gives
    inf/NaN latents in fp16), which stays fp32 under fp16. An fp16-safe VAE (config key
    `vae`) does not ask, and runs in fp16."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    if name == "vae" and dtype == torch.float16 and module.config.get("force_upcast", False):
        return torch.float32
    return dtype


def _unwrapper(accelerator: Accelerator):
    """The plain module inside accelerate's DDP and torch.compile wrappers, whose state-dict
    keys are the model's own (no `module.` or `_orig_mod.` prefix)."""
    return partial(accelerator.unwrap_model, keep_torch_compile=False)


def _average_gradients(method: Method, models, accelerator: Accelerator) -> None:
    """Average the gradients of trainable modules DDP does not wrap (see `_place_models`)."""
    if accelerator.num_processes == 1:
        return
    for name, module in method.trainable_modules(models).items():
        if name == "unet":
            continue
        for param in module.parameters():
            if param.grad is not None:
                param.grad = accelerator.reduce(param.grad, "mean")


def _all_finite(loss: torch.Tensor, accelerator: Accelerator) -> bool:
    """Whether the loss is finite on every process: all must skip a step together, or DDP's
    gradient all-reduce would wait forever for the one that skipped."""
    flag = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    return bool(accelerator.gather(flag).min().item() > 0)


def _agree(run: RunDir, accelerator: Accelerator, config: TrainConfig, since_save_s: float) -> tuple[set[str], bool]:
    """Control requests and the minutes-based save, decided by the main process and shared,
    so every process saves and stops at the same step."""
    decision = [
        (
            run.pending_requests() if accelerator.is_main_process else set(),
            bool(config.save_every_n_minutes and since_save_s >= config.save_every_n_minutes * 60),
        )
    ]
    if accelerator.num_processes > 1:
        broadcast_object_list(decision)
    return decision[0]


def _save(ctx: Context, report, optimizer, lr_scheduler, plugins) -> Path:
    run, accelerator, config, position, ema = ctx.run, ctx.accelerator, ctx.config, ctx.position, ctx.ema
    main = accelerator.is_main_process
    state = None
    if main:
        state = {
            "format": 1,
            "step": position.step,
            "position": asdict(position),
            "optimizer": optimizer.state_dict(),
            "lr_scheduler": lr_scheduler.state_dict(),
            "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
            "ema": ema.state_dict() if ema is not None else None,
            "plugins": {p.name: p.state_dict() for p in plugins},
            "folder_settings": ckpt.folder_settings(ctx.data),
            "item_weights": ctx.item_weights,
            "config": config.model_dump(mode="json"),
        }
    weights = ctx.method.checkpoint_weights(ctx.models, unwrap=_unwrapper(accelerator)) if main else None
    path = ckpt.save_checkpoint(run.checkpoints, position.step, weights=weights, state=state, accelerator=accelerator)
    if main:
        for old in ckpt.prune_checkpoints(run.checkpoints, config.keep_last_n_checkpoints):
            report.log(f"removed old checkpoint {old.name} (keep_last_n_checkpoints={config.keep_last_n_checkpoints})")
    report.event("checkpoint", {"step": position.step, "path": str(path)})
    report.log(f"saved checkpoint {path}")
    return path


def _show_bar(progress_bar: bool | None, accelerator: Accelerator) -> bool:
    """By default a bar in a terminal and in a notebook cell (tqdm.auto draws a widget
    there; a notebook's stderr is no terminal), not in logs and tests."""
    wanted = (sys.stderr.isatty() or _in_notebook()) if progress_bar is None else progress_bar
    return wanted and accelerator.is_local_main_process


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (JupyterLab, Colab, VS Code)."""
    shell = getattr(sys.modules.get("IPython"), "get_ipython", lambda: None)()
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


