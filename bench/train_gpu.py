"""GPU benchmark of the training engine against the diffusers reference training step.

    python bench/train_gpu.py                     # on an H100: SD1.5 architecture, 512 px
    python bench/train_gpu.py --model sdxl        # on an H100: SDXL base 1.0 architecture, 1024 px
    python bench/train_gpu.py --tiny [--model sdxl]   # smoke check anywhere (CPU, tiny model, 64 px)
    python bench/train_gpu.py --model flux        # FLUX.1-dev (sd35l, sd35m: SD3.5): bench/flow_cases.py

Builds the published architectures (edlib.model.architectures) with random weights (nothing
is downloaded, and speed does not depend on weight values), then times in one run:

- reference: a step written the way diffusers' examples/text_to_image/train_text_to_image.py
  (SD1.5) or train_text_to_image_sdxl.py (SDXL: both text encoders, pooled embedding and
  add_time_ids, VAE in fp32 as that script keeps it) does it, with the VAE and text encoder(s)
  run every step, AdamW, bf16 autocast, SDPA attention. It is fed ready-made pixel tensors (no
  image decoding), which favours it.
- fast: edlib's engine (`edlib.train.train`, the real loop on a real data root) with cached
  latents and text embeddings, fused AdamW, channels_last, torch.compile.
- lean: the engine with gradient checkpointing and 8-bit AdamW (plus the caches); for SDXL
  also `full_bf16` (UNet weights and gradients in bf16, as kohya's --full_bf16), the preset
  issue 9 wants under 24 GiB. The caches let the VAE and text encoders wait in CPU memory.
- lora (SDXL): the engine's LoRA (rank 16 on attention, base in bf16) with gradient
  checkpointing and the caches.

Each row is printed as soon as it is measured (so a run cut short keeps what it measured):
images/s, the ratio to the reference at the same batch size, model FLOPs utilisation (UNet
forward + backward FLOPs per image, counted with torch.utils.flop_counter on the meta device,
over the GPU's peak bf16 rate, --peak-tflops; recomputation by gradient checkpointing is not
counted, as is usual for MFU) and peak GPU memory. Engine numbers are measured in its second
epoch, after the caches are filled and compilation is done.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edlib.model.config import TrainConfig  # noqa: E402
from edlib.model.models import load_models  # noqa: E402
from edlib.model.tiny import build_tiny_pipeline, build_tiny_tokenizer  # noqa: E402
from edlib.train import architectures as arch  # noqa: E402
from edlib.train.loop import train  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_cases import FLOW_MODELS, run_flow  # noqa: E402 - bench/flow_cases.py: FLUX.1 and SD3.5 rows

MODELS = ("sd15", "sdxl", *FLOW_MODELS)
# Defaults per model: resolution, and the cases in the order they run (the compiled one last:
# it takes minutes to compile, and a run cut short should have the others).
DEFAULTS = {
    "sd15": dict(
        resolution=512,
        cases=("lean", "lora", "lora-no-ckpt", "fast"),
        batch={"fast": 16, "lean": 8, "lora": 16, "lora-no-ckpt": 16},
    ),
    "sdxl": dict(resolution=1024, cases=("lean", "lora", "fast"), batch={"fast": 4, "lean": 4, "lora": 4}),
}
NAMES = {"sd15": "SD1.5 architecture, random weights", "sdxl": "SDXL base 1.0 architecture, random weights"}


def build_sd15(out_dir: Path, device: str) -> Path:
    """An SD1.5-architecture diffusers folder with random weights."""
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device(device):  # random init on the GPU: seconds instead of a minute
        pipeline = StableDiffusionPipeline(
            vae=AutoencoderKL(**arch.SD_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**arch.SD15_TEXT_ENCODER)),
            tokenizer=build_tiny_tokenizer(out_dir / "tokenizer"),  # ids only; speed is the same
            unet=UNet2DConditionModel(**arch.SD15_UNET),
            scheduler=PNDMScheduler(**arch.SD15_SCHEDULER),
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
        )
    return _save(pipeline, out_dir)


def build_sdxl(out_dir: Path, device: str) -> Path:
    """An SDXL base 1.0-architecture diffusers folder with random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    with torch.device(device):
        pipeline = StableDiffusionXLPipeline(
            vae=AutoencoderKL(**arch.SDXL_VAE),
            text_encoder=CLIPTextModel(CLIPTextConfig(**arch.SDXL_TEXT_ENCODER)),
            text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch.SDXL_TEXT_ENCODER_2)),
            tokenizer=build_tiny_tokenizer(out_dir / "tokenizer"),
            tokenizer_2=build_tiny_tokenizer(out_dir / "tokenizer_2"),
            unet=UNet2DConditionModel(**arch.SDXL_UNET),
            scheduler=EulerDiscreteScheduler(**arch.SDXL_SCHEDULER),
        )
    return _save(pipeline, out_dir)


def _save(pipeline, out_dir: Path) -> Path:
    # Saved in bf16 (half the bytes to write and read; random weights lose nothing); the
    # engine and the reference load them as fp32, as they would a real model.
    pipeline.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    del pipeline
    _free("cuda" if torch.cuda.is_available() else "cpu")
    return out_dir


def make_data_root(root: Path, count: int, size: int) -> Path:
    if root.is_dir():
        return root
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    for i in range(count):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"photo of a cat_{i:04d}.png", compress_level=1)
    return root


def unet_train_flops_per_image(unet_config: dict, latent_side: int, *, base_trains: bool) -> float:
    """FLOPs of one UNet forward + backward for one image of latent_side x latent_side
    latents, counted on the meta device (no memory, no GPU time). `base_trains` False (LoRA):
    no weight gradients, only the input gradients the adapters need (their own FLOPs are
    negligible)."""
    from diffusers import UNet2DConditionModel
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(unet_config)
    unet.requires_grad_(base_trains)
    config = unet.config
    latents = torch.randn(1, config.in_channels, latent_side, latent_side, device="meta", requires_grad=not base_trains)
    hidden = torch.randn(1, 77, config.cross_attention_dim, device="meta")
    timesteps = torch.randint(0, 1000, (1,), device="meta")
    added = None
    if config.addition_embed_type == "text_time":
        pooled = config.projection_class_embeddings_input_dim - 6 * config.addition_time_embed_dim
        added = {"text_embeds": torch.randn(1, pooled, device="meta"), "time_ids": torch.randn(1, 6, device="meta")}
    with FlopCounterMode(display=False) as counter:
        unet(latents, timesteps, hidden, added_cond_kwargs=added).sample.float().pow(2).mean().backward()
    return float(counter.get_total_flops())


@lru_cache(maxsize=None)  # the same for every row of a run; a count of SDXL takes seconds
def model_flops_per_image(model: Path, resolution: int, *, base_trains: bool) -> float:
    """`unet_train_flops_per_image` for a diffusers folder at a resolution in pixels."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae_factor = 2 ** (len(AutoencoderKL.load_config(model / "vae")["block_out_channels"]) - 1)
    return unet_train_flops_per_image(
        UNet2DConditionModel.load_config(model / "unet"), resolution // vae_factor, base_trains=base_trains
    )


def reference_images_per_s(model: Path, batch: int, resolution: int, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """A training step as diffusers' train_text_to_image(_sdxl).py writes it; returns
    (images/s, peak GiB)."""
    import torch.nn.functional as F
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()  # the engine's last run left its own
    precision = "bf16" if device == "cuda" else "no"
    accelerator = Accelerator(mixed_precision=precision)
    models = load_models(str(model))
    weight_dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    # The SDXL script keeps the VAE in fp32 (it overflows in half precision) unless given
    # a fp16-safe one; the SD1.5 script casts it to the weight dtype.
    vae_dtype = torch.float32 if models.is_sdxl else weight_dtype
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
    # SDXL micro-conditioning: original size, crop top-left, target size (all images unscaled, uncropped).
    add_time_ids = torch.tensor([[resolution, resolution, 0, 0, resolution, resolution]] * batch, device=accelerator.device)

    times = []
    _reset_peak(device)
    for step in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        latents = models.vae.encode(pixels).latent_dist.sample() * models.vae_scaling_factor
        latents = latents.to(weight_dtype)
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), device=latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with torch.no_grad():
            if models.is_sdxl:  # the script's encode_prompt: penultimate layers joined, second encoder's pooled output
                outputs = [encoder(i, output_hidden_states=True) for encoder, i in zip(encoders, ids)]
                hidden = torch.cat([out.hidden_states[-2] for out in outputs], dim=-1)
                added = {"text_embeds": outputs[1][0], "time_ids": add_time_ids.to(weight_dtype)}
            else:
                hidden, added = encoders[0](ids[0], return_dict=False)[0], None
        with accelerator.autocast():
            pred = unet(noisy, timesteps, hidden, added_cond_kwargs=added, return_dict=False)[0]
        loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak = _peak_gib(device)
    del models, unet, optimizer, accelerator, encoders
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
            keep_last_n_checkpoints=1,
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
    shutil.rmtree(run_dir, ignore_errors=True)  # an SDXL checkpoint with optimizer state is ~30 GB
    _free(device)
    return 1.0 / statistics.median(seconds_per_image), peak


def presets(model: str, gpu: bool) -> dict[str, dict]:
    """The engine's config keys for each case (the CPU smoke check skips what needs CUDA,
    and compilation, which takes minutes on a CPU)."""
    fast = dict(
        mixed_precision="bf16" if gpu else "no",
        cache_latents="memory",
        cache_text_embeddings=True,
        channels_last=True,
        compile=gpu,
        optimizer_args={"fused": True} if gpu else {},
    )
    lean = dict(fast, channels_last=False, compile=False, gradient_checkpointing=True, optimizer_args={},
                optimizer="adamw8bit" if gpu else "adamw")
    lora = dict(lean, optimizer="adamw", method="lora", network_dim=16, network_alpha=8.0, unet_lr=1e-4)
    if model == "sdxl":  # bf16 weights and gradients: 2.57B fp32 ones alone would take 19 GiB (bf16 runs on a CPU too)
        lean = dict(lean, mixed_precision="bf16", full_bf16=True)
    # Issue 6: LoRA with and without checkpointing; with it, the preset meant to fit 8 GiB.
    return {"fast": fast, "lean": lean, "lora": lora, "lora-no-ckpt": dict(lora, gradient_checkpointing=False)}


@dataclass
class Bench:
    """One benchmark run: the model built once, references measured once per batch size."""

    model: str
    path: Path
    work: Path
    device: str
    resolution: int
    steps: int
    warmup: int
    peak_flops: float
    references: dict[int, tuple[float, float]] = field(default_factory=dict)

    def reference(self, batch: int) -> tuple[float, float]:
        if batch not in self.references:
            self.references[batch] = reference_images_per_s(self.path, batch, self.resolution, self.steps, self.warmup, self.device)
            self.row(f"reference (b{batch})", *self.references[batch], ratio=1.0, base_trains=True)
        return self.references[batch]

    def engine(self, name: str, batch: int, preset: dict) -> None:
        ref_ips, _ = self.reference(batch)
        data = make_data_root(self.work / f"data-{batch}", batch * self.steps, self.resolution)
        ips, peak = engine_images_per_s(
            self.path, data, self.work / f"run-{name}", self.device, batch_size=batch, resolution=self.resolution, **preset
        )
        self.row(f"edlib {name} (b{batch})", ips, peak, ratio=ips / ref_ips, base_trains=preset.get("method") != "lora")

    def row(self, label: str, ips: float, peak: float, *, ratio: float, base_trains: bool) -> None:
        flops = model_flops_per_image(self.path, self.resolution, base_trains=base_trains)
        mfu = flops * ips / self.peak_flops
        print(f"{label:24} {ips:10.2f} {ratio:7.2f} {mfu:7.1%} {peak:9.2f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=MODELS, default="sd15", help="architecture to benchmark")
    parser.add_argument("--tiny", action="store_true", help="tiny model at 64 px on the CPU: a smoke check")
    parser.add_argument("--cases", nargs="+", help="engine cases to run, in order (default: all of the model's)")
    parser.add_argument("--batch-size", type=int, help="batch of every case (default: per case, see DEFAULTS)")
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (engine: steps of its second epoch)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU peak dense bf16 TFLOPS (H100 SXM, H200: 989)")
    args = parser.parse_args(argv)
    if args.model in FLOW_MODELS:
        return run_flow(args.model, tiny=args.tiny, cases=args.cases, batch=args.batch_size or 1, resolution=args.resolution,
                        steps=args.steps, warmup=args.warmup)

    defaults = DEFAULTS[args.model]
    cases = args.cases or defaults["cases"]
    unknown = set(cases) - set(defaults["batch"])
    if unknown:
        parser.error(f"--cases: unknown for {args.model}: {', '.join(sorted(unknown))}; allowed: {', '.join(defaults['batch'])}")
    device = "cuda" if torch.cuda.is_available() and not args.tiny else "cpu"
    gpu = device == "cuda"
    resolution = args.resolution or defaults["resolution"]
    steps, warmup = args.steps, args.warmup
    if args.tiny:
        resolution, steps, warmup = 64, 3, 1
    batches = {case: args.batch_size or (2 if args.tiny else defaults["batch"][case]) for case in cases}

    work = Path(tempfile.mkdtemp(prefix="edlib-bench-"))
    started = time.perf_counter()
    if args.tiny:
        path = build_tiny_pipeline(work / "model", variant="sdxl" if args.model == "sdxl" else "sd1")
    else:
        path = (build_sdxl if args.model == "sdxl" else build_sd15)(work / "model", device)
    print(f"device: {torch.cuda.get_device_name() if gpu else 'cpu'}, resolution {resolution}, model "
          f"{'tiny ' + args.model if args.tiny else NAMES[args.model]} (built in {time.perf_counter() - started:.0f} s)")
    print(f"{'':24} {'images/s':>10} {'x ref':>7} {'MFU':>7} {'peak GiB':>9}", flush=True)
    bench = Bench(args.model, path, work, device, resolution, steps, warmup, args.peak_tflops * 1e12)
    for case in cases:
        bench.engine(case, batches[case], presets(args.model, gpu)[case])
    shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def _peak_gib(device: str) -> float:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else float("nan")


def _free(device: str) -> None:
    torch._dynamo.reset()  # compiled graphs hold on to the model they were traced from
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
