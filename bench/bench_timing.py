"""How the benchmarks time a training step: the diffusers reference step and edlib's engine,
each over a window of whole steps with the GPU synchronised at both ends.

images/s = images trained in the window / wall clock of the window. The window opens after
warm-up steps (and, for the engine, after a first epoch that fills its caches and compiles),
with `torch.cuda.synchronize()`, and closes with another: every kernel of every step in it
is counted, none of a step outside it. The first step is timed alone (synchronised too): for a
compiled case, its excess over a window step is the compile time.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from bench_models import free, peak_gib, reset_peak, sync

from edlib.model.config import TrainConfig
from edlib.model.models import load_models
from edlib.train.hooks import Plugin
from edlib.train.host_sync import CudaSyncs, HostRoundTrips, RoundTripCounter
from edlib.train.loop import train


def reference_run(model: Path, batch: int, resolution: int, steps: int, warmup: int, device: str, *, encoders_each_step: bool) -> dict:
    """A training step as diffusers' examples write it. SD1.5 (train_text_to_image.py): the VAE
    and the text encoder run every step. SDXL (train_text_to_image_sdxl.py): latents and
    prompt embeddings are computed once before training, as that script does with its dataset
    map, unless `encoders_each_step` (a labelled extra row). AdamW, bf16 autocast, SDPA."""
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # the engine's last run left its own
    precision = "bf16" if device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision)
    models = load_models(str(model))
    weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    vae_dtype = torch.float32 if models.is_sdxl else weight_dtype  # the SDXL script keeps its VAE in fp32
    models.vae.requires_grad_(False).to(accelerator.device, dtype=vae_dtype)
    encoders = [models.text_encoder] + ([models.text_encoder_2] if models.is_sdxl else [])
    tokenizers = [models.tokenizer] + ([models.tokenizer_2] if models.is_sdxl else [])
    for encoder in encoders:
        encoder.requires_grad_(False).to(accelerator.device, dtype=weight_dtype)
    unet = models.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    scheduler = models.noise_scheduler
    pixels = torch.randn(batch, 3, resolution, resolution, device=accelerator.device, dtype=vae_dtype)
    ids = [
        tokenizer(["photo of a cat"] * batch, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
        .input_ids.to(accelerator.device)
        for tokenizer in tokenizers
    ]

    @torch.no_grad()
    def encode():
        latents = models.vae.encode(pixels).latent_dist.sample() * models.vae_scaling_factor
        if models.is_sdxl:  # the script's encode_prompt: penultimate layers joined, second encoder's pooled output
            outputs = [encoder(i, output_hidden_states=True) for encoder, i in zip(encoders, ids)]
            return latents.to(weight_dtype), torch.cat([out.hidden_states[-2] for out in outputs], dim=-1), outputs[1][0]
        return latents.to(weight_dtype), encoders[0](ids[0], return_dict=False)[0], None

    cached = None if (encoders_each_step or not models.is_sdxl) else encode()

    def step():
        latents, hidden, pooled = cached or encode()
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        added = None
        if models.is_sdxl:  # the script's compute_time_ids: original size, crop, target size, per batch
            time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * batch)
            added = {"text_embeds": pooled, "time_ids": time_ids.to(accelerator.device, dtype=weight_dtype)}
        with accelerator.autocast():
            pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync(device)
    start = time.perf_counter()
    step()
    sync(device)
    first = time.perf_counter() - start
    for _ in range(max(warmup - 1, 0)):
        step()
    reset_peak(device)
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync(device)
    seconds = time.perf_counter() - start
    result = {"images_per_s": batch * steps / seconds, "peak_gib": peak_gib(device), "first_step_s": first,
              "window_steps": steps, "window_s": seconds}  # fmt: skip
    models = unet = optimizer = accelerator = encoders = None  # free them (the closures above hold the same cells)
    free(device)
    return result


class WindowDone(Exception):
    """Raised by `WindowProbe` once it has measured: the run stops there, so nothing after the
    window (the last checkpoint, exports, end samples) is paid for."""


class WindowProbe(Plugin):
    """Times the engine from inside its loop: the first step alone, then steps
    (`window_start`, `window_end`] synchronised at both ends, then counts host syncs over
    `count_steps` more steps (on a GPU: CUDA's sync warnings, `torch.cuda.set_sync_debug_mode`;
    on a CPU: `edlib.train.host_sync`) and ends the run. Listed first among the plugins, so
    each `on_step` comes right after the step's own work. The counting is
    `edlib.train.host_sync.RoundTripCounter`'s, fed only the steps from `window_end` on, so
    nothing counts inside the timed window."""

    name = "window_probe"

    def __init__(self, device: str, window_start: int, window_end: int, count_steps: int):
        self.device, self.window_start, self.window_end, self.count_steps = device, window_start, window_end, count_steps
        self.first_step_s = self.window_s = float("nan")
        self.peak_gib = float("nan")
        self.counter = RoundTripCounter(CudaSyncs if device == "cuda" else HostRoundTrips)
        self._clock = 0.0

    @property
    def syncs(self) -> list[int]:
        """Host syncs of each counted step (steps window_end + 1 .. window_end + count_steps)."""
        return list(self.counter.per_step.values())

    def on_start(self, ctx) -> None:
        sync(self.device)
        self._clock = time.perf_counter()

    def on_step(self, ctx, metrics) -> None:
        step = metrics["step"]
        if step == 1:
            sync(self.device)
            self.first_step_s = time.perf_counter() - self._clock
        if step == self.window_start:
            sync(self.device)
            reset_peak(self.device)
            self._clock = time.perf_counter()
        elif step == self.window_end:
            sync(self.device)
            self.window_s = time.perf_counter() - self._clock
            self.peak_gib = peak_gib(self.device)
        last = self.window_end + self.count_steps
        if self.window_end <= step <= last:
            self.counter.on_step(ctx, metrics)  # ends the interval counted up to this step, starts the next
        if step >= last:
            self.counter.on_end(ctx)  # nothing counted after the last counted step
            raise WindowDone

    def close(self) -> None:
        self.counter.on_end(None)


def engine_run(model: Path, data: Path, run_dir: Path, device: str, *, steps: int, warmup: int, count_steps: int, **preset) -> dict:
    """The real engine (`edlib.train.train`) on `data`, two epochs: the first fills the caches
    and compiles; in the second, after `warmup` steps, `steps` steps are timed, then host syncs
    counted over `count_steps` steps, and the run ends there (no final checkpoint or export)."""
    images = len(list(data.glob("*.png")))
    per_epoch = images // preset["batch_size"]
    config = TrainConfig.from_dict(
        dict(model=str(model), data_root=str(data), run_dir=str(run_dir), epochs=2, save_every_n_epochs=None,
             save_every_n_minutes=None, keep_last_n_checkpoints=1, write_schedule=False, export_formats=[], **preset)
    )  # fmt: skip
    probe = WindowProbe(device, per_epoch + warmup, per_epoch + warmup + steps, count_steps)
    if per_epoch < warmup + steps + count_steps:
        raise ValueError(f"data root has {per_epoch} steps per epoch; need {warmup + steps + count_steps}")
    try:
        train(config, plugins=[probe], progress_bar=False)
    except WindowDone:
        pass
    finally:
        probe.close()
    free(device)
    batch = preset["batch_size"]
    window = probe.window_s
    return {
        "images_per_s": batch * steps / window,
        "peak_gib": probe.peak_gib,
        "first_step_s": probe.first_step_s,
        "compile_s": max(probe.first_step_s - window / steps, 0.0) if preset.get("compile") else None,
        "window_steps": steps,
        "window_s": window,
        "host_syncs_per_step": statistics.median(probe.syncs) if probe.syncs else None,
        "host_syncs_counted_by": "cuda sync debug mode" if device == "cuda" else "edlib.train.host_sync (CPU)",
    }
