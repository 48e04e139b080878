"""GPU benchmark of the training engine against the diffusers reference training step.

    python bench/train_gpu.py                 # on an H100: SD1.5 architecture, 512 px
    python bench/train_gpu.py --tiny          # smoke check anywhere (CPU, tiny model, 64 px)

Builds SD1.5-architecture models with random weights from the published configs (written
inline below; nothing is downloaded, and speed does not depend on weight values), then times
in one run:

- reference: a step written the way diffusers' examples/text_to_image/train_text_to_image.py
  does it: VAE and text encoder run every step, AdamW, bf16 autocast, SDPA attention. It is
  fed ready-made pixel tensors (no image decoding), which favours it.
- fast: edlib's engine (`edlib.train.train`, the real loop on a real data root) with cached
  latents and text embeddings, fused AdamW, torch.compile.
- lean: the engine with gradient checkpointing and 8-bit AdamW (plus the caches).

Each line prints images/s, the ratio to the reference at the same batch size, model FLOPs
utilisation (UNet forward + backward FLOPs counted with torch.utils.flop_counter, over the
GPU's peak bf16 rate, --peak-tflops) and peak GPU memory. Engine numbers are measured in its
second epoch, after the caches are filled and compilation is done.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edlib.train.config import TrainConfig  # noqa: E402
from edlib.train.architectures import SD15_SCHEDULER, SD15_TEXT_ENCODER, SD15_UNET, SD_VAE  # noqa: E402
from edlib.train.loop import train  # noqa: E402
from edlib.train.models import load_models  # noqa: E402
from edlib.train.tiny import build_tiny_pipeline, build_tiny_tokenizer  # noqa: E402

def build_sd15(out_dir: Path) -> Path:
    """An SD1.5-architecture diffusers folder with random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = build_tiny_tokenizer(out_dir / "tokenizer")  # ids only; speed is the same
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD_VAE),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT_ENCODER)),
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**SD15_UNET),
        scheduler=PNDMScheduler(**SD15_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipeline.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def make_data_root(root: Path, count: int, size: int) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"photo of a cat_{i:04d}.png")
    return root


def unet_train_flops(model: Path, batch: int, resolution: int, device: str) -> float:
    """FLOPs of one UNet forward + backward at this batch and resolution."""
    from torch.utils.flop_counter import FlopCounterMode

    models = load_models(str(model))
    unet = models.unet.to(device)
    side = resolution // models.vae_scale_factor
    latents = torch.randn(batch, 4, side, side, device=device)
    hidden = torch.randn(batch, 77, unet.config.cross_attention_dim, device=device)
    timesteps = torch.randint(0, 1000, (batch,), device=device)
    with FlopCounterMode(display=False) as counter:
        unet(latents, timesteps, hidden).sample.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


def reference_images_per_s(model: Path, batch: int, resolution: int, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """A training step as diffusers' train_text_to_image.py writes it; returns (images/s,
    peak GiB)."""
    import torch.nn.functional as F
    from accelerate import Accelerator

    precision = "bf16" if device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision)
    models = load_models(str(model))
    weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    models.vae.requires_grad_(False).to(accelerator.device, dtype=weight_dtype)
    models.text_encoder.requires_grad_(False).to(accelerator.device, dtype=weight_dtype)
    unet = models.unet.train()
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-5)
    unet, optimizer = accelerator.prepare(unet, optimizer)
    scheduler = models.noise_scheduler
    pixels = torch.randn(batch, 3, resolution, resolution, device=accelerator.device, dtype=weight_dtype)
    ids = models.tokenizer(
        ["photo of a cat"] * batch, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
    ).input_ids.to(accelerator.device)

    times = []
    _reset_peak(device)
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        latents = models.vae.encode(pixels).latent_dist.sample() * models.vae_scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        hidden = models.text_encoder(ids, return_dict=False)[0]
        with accelerator.autocast():
            pred = unet(noisy, timesteps, hidden, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak = _peak_gib(device)
    del models, unet, optimizer, accelerator
    _free(device)
    return batch / statistics.median(times), peak


def engine_images_per_s(model: Path, data: Path, run_dir: Path, device: str, **preset) -> tuple[float, float]:
    """Images/s of the engine's second epoch (caches full, compilation done), and peak GiB."""
    config = TrainConfig.from_dict(
        dict(
            model=str(model),
            data_root=str(data),
            run_dir=str(run_dir),
            epochs=2,
            save_every_n_epochs=None,
            save_every_n_minutes=None,
            write_schedule=False,
            log_every_n_steps=1000,
            **preset,
        )
    )
    seconds_per_image = []

    def collect(event):
        if event.kind == "step" and event.data["epoch"] > 1.0:
            seconds_per_image.append(1.0 / event.data["images_per_s"])

    _reset_peak(device)
    train(config, callbacks=[collect], progress_bar=False)
    peak = _peak_gib(device)
    _free(device)
    return 1.0 / statistics.median(seconds_per_image), peak


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model at 64 px on the CPU: a smoke check")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the reference and the fast preset")
    parser.add_argument("--lean-batch-size", type=int, default=8)
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (engine: steps of its second epoch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak dense bf16 TFLOPS (H100 SXM: 989)")
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    if args.tiny:
        args.batch_size, args.lean_batch_size, args.resolution, args.steps, args.warmup = 2, 2, 64, 3, 1
    work = Path(tempfile.mkdtemp(prefix="edlib-bench-"))
    model = build_tiny_pipeline(work / "model") if args.tiny else build_sd15(work / "model")
    gpu = device == "cuda"
    fast = dict(
        mixed_precision="bf16" if gpu else "no",
        cache_latents="memory",
        cache_text_embeddings=True,
        compile=gpu,  # compiling on a CPU takes minutes; the smoke check skips it
        optimizer_args={"fused": True} if gpu else {},
    )
    lean = dict(fast, compile=False, gradient_checkpointing=True, optimizer="adamw8bit" if gpu else "adamw", optimizer_args={})

    rows = []
    for name, batch, preset in (("fast", args.batch_size, fast), ("lean", args.lean_batch_size, lean)):
        ref_ips, ref_peak = reference_images_per_s(model, batch, args.resolution, args.steps, args.warmup, device)
        data = make_data_root(work / f"data-{batch}", batch * args.steps, args.resolution)
        ips, peak = engine_images_per_s(
            model, data, work / f"run-{name}", device, batch_size=batch, resolution=args.resolution, **preset
        )
        # Model FLOPs utilisation: the UNet's training FLOPs per image, at the measured rate.
        flops_per_image = unet_train_flops(model, batch, args.resolution, device) / batch
        peak_flops = args.peak_tflops * 1e12
        rows.append((f"reference (b{batch})", ref_ips, 1.0, flops_per_image * ref_ips / peak_flops, ref_peak))
        rows.append((f"edlib {name} (b{batch})", ips, ips / ref_ips, flops_per_image * ips / peak_flops, peak))

    print(f"\ndevice: {torch.cuda.get_device_name() if gpu else 'cpu'}, resolution {args.resolution}, model "
          f"{'tiny' if args.tiny else 'SD1.5 architecture, random weights'}")
    print(f"{'':24} {'images/s':>10} {'x ref':>7} {'MFU':>7} {'peak GiB':>9}")
    for label, ips, ratio, mfu_value, peak in rows:
        print(f"{label:24} {ips:10.2f} {ratio:7.2f} {mfu_value:7.1%} {peak:9.2f}")


if __name__ == "__main__":
    main()
