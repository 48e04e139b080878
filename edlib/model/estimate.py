"""Rough memory, time and cost estimates for a training config, before a GPU is rented.

Users pay for cloud GPUs by the hour, so the training notebook shows, before Start, about how
much GPU memory a config needs and how long and how much the run will take on a chosen GPU.
These are orientation figures, not promises:

- **Time** = optimizer steps (from the preview) x images per step / images per second.
  Images per second come from `MEASURED`, throughput measured on one H100 80GB (torch
  2.11 + CUDA 13, diffusers 0.42.1, 2026-11; random weights with the published
  architectures; SD1.5 at 512 px with batch 16, SDXL at 1024 px with batch 4, bf16 autocast;
  /work/shared/GPU_FIGURES.md, each row's text quoted in `MEASURED_SOURCE`, so a basis names
  the row it comes from). Only those rows are *measured*; everything else is labelled a
  *scaled estimate*: other GPUs scale by their dense bf16 tensor TFLOPs relative to the H100
  (memory bandwidth, clocks and drivers are ignored), other resolutions by pixel count,
  settings without a row of their own from the nearest measured row by the ratio between
  two measured rows. Once a run trains, `refine_time` replaces the table by the run's own
  measured images/s, which is the figure to trust.
- **Memory** = weights + gradients + optimizer state of what trains (bytes per parameter:
  fp32 weights and gradients, bf16 with `full_bf16`, whose fp32-state optimizers then keep
  bf16 state too), + frozen weights on the GPU (a VAE or text encoder whose outputs are all
  cached waits in CPU memory, see edlib.model.offload), + activations per image x batch size
  (scaled by pixel count), + 1 GiB for the CUDA context and allocator slack. The activation
  constants are fitted to the peak memory of the same H100 rows, so at the measured settings
  the estimate reproduces them; elsewhere expect +-30%. Real peaks also depend on attention
  kernels, caption length and fragmentation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edlib.model.config import TrainConfig
from edlib.model.estimate_flow import FLOW_ESTIMATES, flow_images_per_s, flow_memory_parts
from edlib.model.identify import model_family as identify_family
from edlib.model.identify import model_location

GIB = 1024**3


@dataclass(frozen=True)
class Family:
    """A Stable Diffusion family: parameter counts and what its H100 measurements give."""

    name: str
    ref_resolution: int  # the resolution its throughput and activations were measured at
    unet_params: float
    text_encoder_params: float  # all text encoders together
    vae_params: float
    activation_gib: float  # activation memory per image at ref_resolution, bf16
    activation_gib_checkpointed: float  # the same with gradient checkpointing
    full_images_per_s: float  # measured: full fine-tune, cached latents and text, AdamW


# Activation constants fitted to GPU_FIGURES.md: (peak - weights - grads - optimizer) / batch.
# SD1.5 full, AdamW, batch 16: (30.2 - 16 B x 860M) / 16 = 1.09 GiB (LoRA rows give 1.09 too);
# with checkpointing: 0.16 (full, 8-bit) and 0.26 (LoRA), taken as 0.2.
# SDXL full, AdamW, batch 4: (66.4 - 16 B x 2.57B) / 4 = 7.0 GiB; checkpointed + 8-bit: 0.42.
# Parameter counts: the published configs in edlib.model.architectures (tests/bench checks
# them): SDXL UNet 2,567.5M, CLIP-L 123.1M + OpenCLIP-bigG 694.7M, VAE 83.7M.
FAMILIES = {
    "sd15": Family("SD1.5", 512, 859.5e6, 123.1e6, 83.7e6, 1.09, 0.2, 74.1),
    "sdxl": Family("SDXL", 1024, 2567.5e6, 817.7e6, 83.7e6, 7.0, 0.42, 9.2),
}

ROW_LABELS = {
    "full_uncached": "full fine-tune, VAE and text encoder every step",
    "full": "full fine-tune, cached latents and text embeddings",
    "full_fused": "full fine-tune, cached latents and text embeddings, fused AdamW",
    "full_compiled": "full fine-tune, cached, torch.compile",
    "full_checkpointed_8bit": "full fine-tune, cached, gradient checkpointing + 8-bit AdamW",
    "lora": "LoRA rank 16, base in bf16",
    "lora_checkpointed": "LoRA rank 16, base in bf16, gradient checkpointing",
}
MEASURED_BATCH = {"sd15": 16, "sdxl": 4}

# Measured on the H100, images/s (GPU_FIGURES.md). Keys: (family, case).
MEASURED: dict[tuple[str, str], float] = {
    ("sd15", "full_uncached"): 50.4,
    ("sd15", "full"): 74.1,
    ("sd15", "full_compiled"): 115.7,
    ("sd15", "full_checkpointed_8bit"): 41.2,
    ("sd15", "lora"): 90.4,
    ("sd15", "lora_checkpointed"): 56.0,
    ("sdxl", "full"): 9.2,
    ("sdxl", "full_fused"): 11.5,
    ("sdxl", "full_checkpointed_8bit"): 5.8,
}
# Where each MEASURED figure comes from: its row in GPU_FIGURES.md (SD1.5 had no separate
# unfused row: its "full" row is already fused AdamW with channels_last).
MEASURED_SOURCE: dict[tuple[str, str], str] = {
    ("sd15", "full_uncached"): "SD1.5, reference step in the style of diffusers' train_text_to_image.py (VAE + text encoder every step, AdamW), batch 16",
    ("sd15", "full"): "SD1.5, cached latents and text embeddings, channels_last, fused AdamW, batch 16",
    ("sd15", "full_compiled"): "SD1.5, cached, channels_last, fused AdamW + torch.compile, batch 16",
    ("sd15", "full_checkpointed_8bit"): "SD1.5, cached, gradient checkpointing + bitsandbytes AdamW8bit, batch 16",
    ("sd15", "lora"): "SD1.5 LoRA rank 16 on attention, base in bf16, batch 16",
    ("sd15", "lora_checkpointed"): "SD1.5 LoRA rank 16 on attention, base in bf16, + gradient checkpointing, batch 16",
    ("sdxl", "full"): "SDXL, cached, AdamW, batch 4",
    ("sdxl", "full_fused"): "SDXL, cached, fused AdamW, batch 4",
    ("sdxl", "full_checkpointed_8bit"): "SDXL, cached, gradient checkpointing + AdamW8bit, batch 4",
}


@dataclass(frozen=True)
class Gpu:
    name: str
    memory_gib: float
    bf16_tflops: float  # dense bf16 (fp16 with fp32 accumulate where no bf16) tensor TFLOPs, datasheet
    price_per_hour: float  # an example on-demand price in USD; users should type their provider's


REFERENCE_GPU = "H100 80GB"
GPUS = {
    g.name: g
    for g in (
        Gpu("H100 80GB", 80, 989, 2.5),
        Gpu("H200 141GB", 141, 989, 3.5),
        Gpu("A100 80GB", 80, 312, 1.6),
        Gpu("A100 40GB", 40, 312, 1.3),
        Gpu("L40S 48GB", 48, 362, 1.0),
        Gpu("RTX A6000 48GB", 48, 155, 0.8),
        Gpu("RTX 4090 24GB", 24, 165, 0.7),
        Gpu("RTX 3090 24GB", 24, 71, 0.45),
        Gpu("A10G 24GB", 24, 125, 1.0),
        Gpu("T4 16GB", 16, 65, 0.35),
    )
}

# Optimizer state per trained parameter: full-size states, each in the weights' dtype (torch's
# AdamW, Lion and Prodigy make them with zeros_like), or a fixed size (8-bit Adam's two
# bytes; Adafactor's factored second moment, about half a byte).
OPTIMIZER_STATES = {"adamw": 2, "lion": 1, "prodigy": 4}
OPTIMIZER_FIXED_BYTES = {"adamw8bit": 2.0, "adafactor": 0.5}


def trained_bytes_per_parameter(config: TrainConfig) -> float:
    """Weights + gradients + optimizer state (+ an fp32 EMA) of one trained parameter."""
    weight = 2 if config.full_bf16 else 4
    optimizer = OPTIMIZER_FIXED_BYTES.get(config.optimizer) or OPTIMIZER_STATES[config.optimizer] * weight
    return 2 * weight + optimizer + (4 if config.ema_decay is not None else 0)


def model_family(model: str) -> str:
    """The estimate's family: `sdxl`, `flux`, `sd35l` or `sd35m` (SD3.5 Large or Medium, by
    the transformer's depth), else `sd15` (SD1.x/2.x-sized UNets). A local diffusers folder or
    .safetensors file says so itself (read without loading any weights); a hub id or other name
    by its words (XL, FLUX, SD3.5 large)."""
    family = identify_family(model)
    if family == "sd3":
        config = Path(model_location(model)).expanduser() / "transformer" / "config.json"
        layers = json.loads(config.read_text(encoding="utf-8")).get("num_layers", 24) if config.is_file() else 24
        return "sd35l" if layers >= 38 else "sd35m"
    if family is not None:
        return {"sd": "sd15", "sdxl": "sdxl", "flux": "flux"}[family]
    name = str(model).lower()
    if "flux" in name:
        return "flux"
    if "stable-diffusion-3" in name or "sd3" in name:
        return "sd35l" if "large" in name else "sd35m"
    return "sdxl" if "xl" in name else "sd15"


# -- memory -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class MemoryEstimate:
    family: str
    parts: dict[str, float]  # GiB per part, in the order they are explained

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values())

    def fits(self, gpu: str) -> bool:
        return self.total_gib <= GPUS[gpu].memory_gib

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib:.1f}" for name, gib in self.parts.items() if gib >= 0.05)
        if self.family in FLOW_ESTIMATES:
            name = FLOW_ESTIMATES[self.family].name
            return f"about {self.total_gib:.1f} GiB ({parts}) for {name}; rough, derived from reported figures, not yet measured"
        return f"about {self.total_gib:.1f} GiB ({parts}) for {FAMILIES[self.family].name}; rough, +-30%"


def estimate_memory(config: TrainConfig, family: str | None = None) -> MemoryEstimate:
    """Peak GPU memory of one GPU training `config` (see the module docstring; SD3.5 and
    FLUX: `edlib.model.estimate_flow`)."""
    family = family or model_family(config.model)
    if family in FLOW_ESTIMATES:
        return MemoryEstimate(family, flow_memory_parts(config, family, trained_bytes_per_parameter(config)))
    fam = FAMILIES[family]
    precision_bytes = 4 if config.mixed_precision == "no" else 2  # frozen weights, activations
    state_bytes = trained_bytes_per_parameter(config)

    if config.method == "full":
        trained, frozen = fam.unet_params, 0.0
    else:  # LoRA adapters, new embeddings, a hypernetwork: a few million parameters; the UNet stays frozen
        trained, frozen = 0.0, fam.unet_params
    text_trains = config.method == "full" and config.text_encoder_lr > 0
    if text_trains:
        trained += fam.text_encoder_params
    elif not config.cache_text_embeddings:  # cached: the text encoders wait in CPU memory
        frozen += fam.text_encoder_params
    if config.cache_latents == "no":  # cached: so does the VAE
        frozen += fam.vae_params

    per_image = fam.activation_gib_checkpointed if config.gradient_checkpointing else fam.activation_gib
    pixels = (config.resolution / fam.ref_resolution) ** 2
    activations = per_image * pixels * config.batch_size * precision_bytes / 2
    return MemoryEstimate(
        family,
        {
            "trained weights, gradients, optimizer": trained * state_bytes / GIB,
            "frozen weights": frozen * precision_bytes / GIB,
            "activations": activations,
            "CUDA context": 1.0,
        },
    )


# -- time and cost ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    measured: bool  # True only for a measured H100 row used as is
    basis: str  # where the figure comes from, in words


def throughput(config: TrainConfig, gpu: str = REFERENCE_GPU, family: str | None = None) -> Throughput:
    """Training images per second of `config` on one `gpu` (see the module docstring)."""
    if gpu not in GPUS:
        raise KeyError(f"unknown GPU {gpu!r}; known: {', '.join(GPUS)}")
    fam_key = family or model_family(config.model)
    if fam_key in FLOW_ESTIMATES:
        rate, basis = flow_images_per_s(config, fam_key, GPUS[gpu].bf16_tflops)
        return Throughput(rate, False, f"{basis} ({gpu})")
    fam = FAMILIES[fam_key]
    row, factors = _nearest_row(config, fam_key)
    rate = MEASURED[(fam_key, row)] if (fam_key, row) in MEASURED else MEASURED[(fam_key, "full")]
    if (fam_key, row) not in MEASURED:  # e.g. SDXL LoRA: SD1.5's ratio to its full row
        factors.append(("no row of its own, SD1.5's ratio", MEASURED[("sd15", row)] / MEASURED[("sd15", "full")]))
    if config.resolution != fam.ref_resolution:
        factors.append((f"{config.resolution} px instead of {fam.ref_resolution}", (fam.ref_resolution / config.resolution) ** 2))
    if config.mixed_precision == "no":
        factors.append(("fp32 instead of bf16", 0.5))
    if gpu != REFERENCE_GPU:
        factors.append((f"{gpu} TFLOPs / H100", GPUS[gpu].bf16_tflops / GPUS[REFERENCE_GPU].bf16_tflops))
    for _, factor in factors:
        rate *= factor
    label = f"{fam.name} {ROW_LABELS[row]}, batch {MEASURED_BATCH[fam_key]}"
    if not factors:
        return Throughput(rate, True, f"measured on an H100: {label} (GPU_FIGURES.md: {MEASURED_SOURCE[(fam_key, row)]})")
    scaled = "; ".join(why if factor == 1.0 else f"{why} x{factor:.2g}" for why, factor in factors)
    return Throughput(rate, False, f"scaled estimate from the H100 row {label}: {scaled}")


def _nearest_row(config: TrainConfig, family: str) -> tuple[str, list[tuple[str, float]]]:
    """The measured row closest to `config`, and the factors (why, ratio of two measured
    rows) that take it the rest of the way."""
    factors: list[tuple[str, float]] = []
    cached = config.cache_latents != "no" and config.cache_text_embeddings
    if config.method in ("textual_inversion", "hypernetwork"):
        what = config.method.replace("_", " ")
        factors.append((f"{what} timed as LoRA (both backpropagate through the frozen UNet)", 1.0))
    if config.method != "full":
        row = "lora_checkpointed" if config.gradient_checkpointing else "lora"
    elif config.gradient_checkpointing:
        row = "full_checkpointed_8bit"
        if config.optimizer != "adamw8bit":
            factors.append(("timed as with 8-bit AdamW", 1.0))
    elif not cached and family == "sd15":
        return "full_uncached", factors
    elif config.compile and family == "sd15":
        row = "full_compiled"
    elif family == "sdxl" and cached and config.optimizer == "adamw" and config.optimizer_args.get("fused"):
        row = "full_fused"
    else:
        row = "full"
    if config.compile and family == "sdxl" and config.method == "full" and not config.gradient_checkpointing:
        factors.append(("torch.compile not measured for SDXL, timed without it", 1.0))
    if not cached:
        factors.append(("VAE and text encoder every step", MEASURED[("sd15", "full_uncached")] / MEASURED[("sd15", "full")]))
    return row, factors


@dataclass(frozen=True)
class TimeEstimate:
    steps: int
    images_per_step: int
    throughput: Throughput
    price_per_hour: float
    steps_done: int = 0

    @property
    def seconds(self) -> float:
        """The whole run at this throughput."""
        return self.steps * self.images_per_step / self.throughput.images_per_s

    @property
    def remaining_s(self) -> float:
        return max(self.steps - self.steps_done, 0) * self.images_per_step / self.throughput.images_per_s

    @property
    def cost(self) -> float:
        return self.seconds / 3600 * self.price_per_hour

    def describe(self) -> str:
        head = f"{self.steps} steps x {self.images_per_step} images at {self.throughput.images_per_s:.3g} images/s"
        return f"{head}: {format_duration(self.seconds)}, about ${self.cost:.2f} at ${self.price_per_hour:g}/h ({self.throughput.basis})"


def estimate_time(
    config: TrainConfig,
    steps: int,
    gpu: str = REFERENCE_GPU,
    *,
    price_per_hour: float | None = None,
    family: str | None = None,
) -> TimeEstimate:
    """Time and cost of `steps` optimizer steps of `config` on one `gpu` (steps from
    `edlib.data.preview.preview`); `price_per_hour` defaults to the table's example price."""
    price = GPUS[gpu].price_per_hour if price_per_hour is None else price_per_hour
    if price < 0:
        raise ValueError(f"price_per_hour must be >= 0, got {price}")
    images_per_step = config.batch_size * config.gradient_accumulation_steps
    return TimeEstimate(steps, images_per_step, throughput(config, gpu, family), price)


def measured_images_per_s(metrics: list[dict[str, Any]], *, last: int = 20) -> float | None:
    """The run's own images/s: the median over its last `last` steps, leaving out the first
    step (model warm-up, compilation); None before a second step."""
    rates = sorted(m["images_per_s"] for m in metrics[1:][-last:])
    if not rates:
        return None
    return rates[len(rates) // 2]


def refine_time(estimate: TimeEstimate, metrics: list[dict[str, Any]]) -> TimeEstimate:
    """`estimate` with the run's measured images/s and steps done (unchanged until a run
    has two steps)."""
    rate = measured_images_per_s(metrics)
    if rate is None:
        return estimate
    done = metrics[-1]["step"]
    measured = Throughput(rate, True, f"measured live by this run over {min(len(metrics) - 1, 20)} step(s)")
    return replace(estimate, throughput=measured, steps_done=done)


def format_duration(seconds: float) -> str:
    """`3 h 05 min`, `12 min 30 s`, `45 s`."""
    seconds = max(seconds, 0.0)
    if seconds >= 3600:
        hours, rest = divmod(round(seconds / 60), 60)
        return f"{hours} h {rest:02d} min"
    if seconds >= 60:
        minutes, rest = divmod(round(seconds), 60)
        return f"{minutes} min {rest:02d} s"
    return f"{seconds:.0f} s"
