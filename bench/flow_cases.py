"""GPU benchmark rows for FLUX.1 and SD3.5: the engine's LoRA presets against the training step
of diffusers' train_dreambooth_lora_flux.py / train_dreambooth_lora_sd3.py as written.

    python bench/flow_cases.py --model flux            # FLUX.1-dev architecture, 1024 px (H100/H200)
    python bench/flow_cases.py --model sd35l           # SD3.5 Large; sd35m: SD3.5 Medium
    python bench/flow_cases.py --tiny --model flux     # CPU smoke run on the tiny model (seconds)

bench/train_gpu.py runs these too (`--model flux|sd35l|sd35m`), after its SD1.5 and SDXL rows.
The architectures are the published ones (edlib.model.architectures) with random weights;
nothing is downloaded. Rows, printed as each is measured:

- reference: the script's step with its defaults as written: the VAE encodes every step
  (``latent_dist.sample()``, shift and scale), prompt embeddings computed once (one instance
  prompt), LoRA on its default layers (FLUX: attention and feed-forward of the double blocks,
  attention of the single blocks; SD3: attention), rank 16, Gaussian init, the transformer in
  bf16, uniform timestep indices into the scheduler (FLUX, ``--weighting_scheme none``) or
  logit-normal (SD3), FLUX guidance 1.0 (its README's ``--guidance_scale=1``), SD3's
  preconditioned x0 target, AdamW, no gradient checkpointing.
- lora: the engine (`edlib.train.train` on a generated data root): rank 16 on the family's
  default layers, bf16 base, cached latents and text embeddings, gradient checkpointing, AdamW.
- lora-fp8: the same with ``fp8_base`` and 8-bit AdamW: the 24 GB preset of docs/methods.md.
- lora-swap (FLUX): ``blocks_to_swap: 20`` (the last 20 single blocks wait in CPU memory).

Columns: images/s (median over timed steps; the engine's second epoch), x ref, peak GiB.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_models import append_jsonl, device_name, free, make_data_root, peak_gib, reset_peak, sync  # noqa: E402

from edlib.model import architectures as arch  # noqa: E402
from edlib.model.config import TrainConfig  # noqa: E402
from edlib.model.flow import image_ids, pack_latents, unpack_latents  # noqa: E402
from edlib.model.models import encode_prompts, load_models  # noqa: E402
from edlib.model.tiny import DEFAULT_WORDS, build_tiny_pipeline, build_tiny_tokenizer  # noqa: E402
from edlib.model.tiny_flow import build_t5_tokenizer  # noqa: E402
from edlib.train.loop import train  # noqa: E402

FLOW_MODELS = ("flux", "sd35l", "sd35m")
CASES = {"flux": ("lora", "lora-fp8", "lora-swap"), "sd35l": ("lora", "lora-fp8"), "sd35m": ("lora", "lora-fp8")}
NAMES = {"flux": "FLUX.1-dev architecture", "sd35l": "SD3.5 Large architecture", "sd35m": "SD3.5 Medium architecture"}
# The scripts' default LoRA layers (module names as their target_modules list them).
REFERENCE_TARGETS = {
    "flux": ["attn.to_k", "attn.to_q", "attn.to_v", "attn.to_out.0", "attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj",
             "attn.to_add_out", "ff.net.0.proj", "ff.net.2", "ff_context.net.0.proj", "ff_context.net.2"],
    "sd3": ["attn.add_k_proj", "attn.add_q_proj", "attn.add_v_proj", "attn.to_add_out", "attn.to_k", "attn.to_out.0",
            "attn.to_q", "attn.to_v"],
}


def build(model: str, out_dir: Path, device: str) -> Path:
    """A diffusers folder of the published architecture with random weights, saved in bf16."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    clip_tokenizer = build_tiny_tokenizer(out_dir / "tokenizer")  # ids only; speed is the same
    with torch.device(device):
        t5 = T5EncoderModel(T5Config(**arch.T5_XXL_ENCODER))
        if model == "flux":
            pipeline = FluxPipeline(
                scheduler=FlowMatchEulerDiscreteScheduler(**arch.FLUX_SCHEDULER),
                vae=AutoencoderKL(**arch.FLUX_VAE),
                text_encoder=CLIPTextModel(CLIPTextConfig(**arch.SD15_TEXT_ENCODER)),
                tokenizer=clip_tokenizer,
                text_encoder_2=t5,
                tokenizer_2=build_t5_tokenizer(out_dir / "tokenizer_2", DEFAULT_WORDS),
                transformer=FluxTransformer2DModel(**arch.FLUX1_DEV_TRANSFORMER),
            )
        else:
            config = arch.SD35_LARGE_TRANSFORMER if model == "sd35l" else arch.SD35_MEDIUM_TRANSFORMER
            pipeline = StableDiffusion3Pipeline(
                transformer=SD3Transformer2DModel(**config),
                scheduler=FlowMatchEulerDiscreteScheduler(**arch.SD3_SCHEDULER),
                vae=AutoencoderKL(**arch.SD3_VAE),
                text_encoder=CLIPTextModelWithProjection(CLIPTextConfig(**arch.SD3_TEXT_ENCODER)),
                tokenizer=clip_tokenizer,
                text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**arch.SD3_TEXT_ENCODER_2)),
                tokenizer_2=build_tiny_tokenizer(out_dir / "tokenizer_2"),
                text_encoder_3=t5,
                tokenizer_3=build_t5_tokenizer(out_dir / "tokenizer_3", DEFAULT_WORDS),
            )
    pipeline.to(torch.bfloat16).save_pretrained(out_dir, safe_serialization=True)
    del pipeline, t5
    free(device)
    return out_dir


def reference_images_per_s(path: Path, batch: int, resolution: int, steps: int, warmup: int, device: str) -> tuple[float, float]:
    """The script's training step (module docstring); returns (images/s, peak GiB)."""
    from peft import LoraConfig

    gpu = device == "cuda"
    dtype = torch.bfloat16 if gpu else torch.float32
    models = load_models(str(path), dtype=dtype, max_sequence_length=None if gpu else 8)
    flux = models.family == "flux"
    for name in (*models.text_encoder_names, "vae"):
        getattr(models, name).requires_grad_(False).to(device)
    with torch.no_grad():  # one instance prompt: encoded once, before training
        cond = encode_prompts(models, ["photo of a cat"] * batch)
    for name in models.text_encoder_names:  # the script frees them
        getattr(models, name).to("cpu")
    transformer = models.unet.requires_grad_(False).to(device)
    transformer.add_adapter(LoraConfig(r=16, lora_alpha=16, init_lora_weights="gaussian", target_modules=REFERENCE_TARGETS["flux" if flux else "sd3"]))
    trainable = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    scheduler = models.noise_scheduler
    pixels = torch.randn(batch, 3, resolution, resolution, device=device, dtype=dtype)
    times = []
    reset_peak(device)
    for step in range(warmup + steps):
        sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            latents = (models.vae.encode(pixels).latent_dist.sample() - models.vae_shift_factor) * models.vae_scaling_factor
        noise = torch.randn_like(latents)
        if flux:
            u = torch.rand(batch, device=device)
        else:
            u = torch.sigmoid(torch.randn(batch, device=device))
        sigmas = scheduler.sigmas.to(device)[(u * scheduler.config.num_train_timesteps).long()].to(dtype).view(-1, 1, 1, 1)
        noisy = (1 - sigmas) * latents + sigmas * noise
        with torch.autocast(device, dtype=torch.bfloat16, enabled=gpu):
            if flux:
                h, w = latents.shape[-2:]
                pred = transformer(
                    hidden_states=pack_latents(noisy), timestep=sigmas.flatten(), guidance=torch.ones(batch, device=device),
                    pooled_projections=cond.pooled, encoder_hidden_states=cond.hidden,
                    txt_ids=torch.zeros(cond.hidden.shape[1], 3, device=device), img_ids=image_ids(h, w, device), return_dict=False,
                )[0]
                loss = (unpack_latents(pred, h, w).float() - (noise - latents).float()).pow(2).mean()
            else:
                pred = transformer(noisy, cond.hidden, cond.pooled, sigmas.flatten() * 1000, return_dict=False)[0]
                loss = ((pred * -sigmas + noisy).float() - latents.float()).pow(2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        if step >= warmup:
            times.append(time.perf_counter() - start)
    peak = peak_gib(device)
    del models, transformer, optimizer, trainable
    free(device)
    return batch / statistics.median(times), peak


def presets(model: str, gpu: bool) -> dict[str, dict]:
    lora = dict(
        method="lora", network_dim=16, network_alpha=16.0, unet_lr=1e-4, mixed_precision="bf16" if gpu else "no",
        cache_latents="memory", cache_text_embeddings=True, gradient_checkpointing=True,
    )
    cases = {"lora": lora, "lora-fp8": dict(lora, fp8_base=True, mixed_precision="bf16", optimizer="adamw8bit" if gpu else "adamw")}
    if model == "flux":
        cases["lora-swap"] = dict(lora, blocks_to_swap=20 if gpu else 1)
    return cases


def engine_images_per_s(path: Path, data: Path, run_dir: Path, device: str, **preset) -> tuple[float, float]:
    config = TrainConfig.from_dict(dict(
        model=str(path), data_root=str(data), run_dir=str(run_dir), epochs=2, save_every_n_epochs=None,
        save_every_n_minutes=None, keep_last_n_checkpoints=1, write_schedule=False, log_every_n_steps=1000,
        export_formats=[], loss_tracking=False, **preset,
    ))
    seconds_per_image = []

    def collect(event):
        if event.kind == "step" and event.data["epoch"] > 1.0:
            seconds_per_image.append(1.0 / event.data["images_per_s"])

    reset_peak(device)
    train(config, callbacks=[collect], progress_bar=False)
    peak = peak_gib(device)
    shutil.rmtree(run_dir, ignore_errors=True)
    free(device)
    return 1.0 / statistics.median(seconds_per_image), peak


def run_flow(model: str, *, tiny: bool, cases=None, batch: int = 1, resolution: int | None = None, steps: int = 6, warmup: int = 2,
             jsonl: Path | None = None) -> None:
    """Every case of ``model`` (module docstring), rows printed as measured (and appended to
    ``jsonl`` as JSON lines, in bench/train_gpu.py's row shape where it has the figure)."""
    device = "cuda" if torch.cuda.is_available() and not tiny else "cpu"
    cases = cases or CASES[model]
    resolution = 64 if tiny else resolution or 1024
    if tiny:
        steps, warmup = 2, 1
    work = Path(tempfile.mkdtemp(prefix="edlib-flow-bench-"))
    started = time.perf_counter()
    if tiny:
        path = build_tiny_pipeline(work / "model", variant="flux" if model == "flux" else "sd3")
    else:
        path = build(model, work / "model", device)
    name = ("tiny " + model) if tiny else NAMES[model]
    print(f"device: {device_name(device)}, resolution {resolution}, model {name} "
          f"(built in {time.perf_counter() - started:.0f} s)")
    print(f"{'':24} {'images/s':>10} {'x ref':>7} {'peak GiB':>9}", flush=True)
    ref, peak = reference_images_per_s(path, batch, resolution, steps, warmup, device)
    print(f"{'reference (b%d)' % batch:24} {ref:10.2f} {1.0:7.2f} {peak:9.2f}", flush=True)
    _row(jsonl, model, tiny, device, "reference", batch, resolution, ref, 1.0, peak)
    data = make_data_root(work / "data", batch * steps, resolution)
    for case in cases:
        preset = dict(presets(model, device == "cuda")[case], batch_size=batch, resolution=resolution)
        if tiny:
            preset["max_sequence_length"] = 8
        ips, peak = engine_images_per_s(path, data, work / f"run-{case}", device, **preset)
        print(f"{'edlib %s (b%d)' % (case, batch):24} {ips:10.2f} {ips / ref:7.2f} {peak:9.2f}", flush=True)
        _row(jsonl, model, tiny, device, case, batch, resolution, ips, ips / ref, peak)
    shutil.rmtree(work, ignore_errors=True)
    print(f"total {time.perf_counter() - started:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=FLOW_MODELS, default="flux")
    parser.add_argument("--tiny", action="store_true", help="tiny model at 64 px on the CPU: a smoke check")
    parser.add_argument("--cases", nargs="+")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--resolution", type=int)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = set(args.cases or ()) - set(CASES[args.model])
    if unknown:
        parser.error(f"--cases: unknown for {args.model}: {', '.join(sorted(unknown))}; allowed: {', '.join(CASES[args.model])}")
    run_flow(args.model, tiny=args.tiny, cases=args.cases, batch=args.batch_size, resolution=args.resolution, steps=args.steps, warmup=args.warmup)


def _row(jsonl, model, tiny, device, case, batch, resolution, images_per_s, x_ref, peak) -> None:
    append_jsonl(jsonl, {
        "bench": "train", "model": model, "tiny": tiny, "device": device_name(device), "case": case, "batch": batch,
        "case_batch": batch, "resolution": resolution, "images_per_s": images_per_s, "x_ref": x_ref,
        "peak_gib": peak, "timing": "median step (bench/flow_cases.py)",
    })  # fmt: skip


if __name__ == "__main__":
    main()
