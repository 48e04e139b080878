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
- **The model in hand.** A model whose parameter counts can be read from its files
  (`edlib.model.sizes`: a local folder or file, a cached hub model) and differ from its
  family's by more than `SAME_SIZE` is estimated from its family's figures scaled by the
  UNet's parameter count: memory by its own counts (activations in proportion), time in
  inverse proportion (compute grows with parameters x pixels). Rough for a model far from
  the family's size (a toy model's step is mostly overhead), and labelled so. Training
  FLOPs per image (torch's flop counter, UNet forward and backward) follow parameters x pixels
  within 1.6x between the world model at 64 px (0.35 GFLOP) and SD1.5 at 512 (2.4 TFLOP).
- **The CPU** (`CPU`, the device a machine without a GPU trains on) has a measured row of its
  own, `CPU_MEASURED`: edlib's world model, full fine-tune in fp32, per CPU core; other models
  and settings scale from it as above, and by the H100 rows' ratios between settings.
  Memory is compared with the machine's RAM. fp32 is the CPU's precision: no penalty for it.
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
from edlib.model.estimate_flow import (
    FLOW_ESTIMATES,
    flow_images_per_s,
    flow_memory_parts,
)
from edlib.model.estimate_rows import (
    CPU,
    CPU_MEASURED,
    DEVICES,
    FAMILIES,
    GIB,
    GPUS,
    MEASURED,
    MEASURED_BATCH,
    MEASURED_SOURCE,
    REFERENCE_GPU,
    ROW_LABELS,
    Family,
)
from edlib.model.identify import model_family as identify_family
from edlib.model.identify import model_location
from edlib.model.sizes import ModelSize, model_size

SAME_SIZE = 0.05  # parameter counts within 5% of the family's are the family's (its measured rows apply)


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


def _model_name(model: str) -> str:
    """A model as a reader knows it: a bundled name as is, a path by its last part."""
    text = str(model)
    return text if text.startswith("edlib:") else Path(text).name or text


def sized_family(config: TrainConfig, family: str) -> Family:
    """The family's figures, or for a model whose own parameter counts differ from them, the
    figures scaled to it (module docstring, "The model in hand")."""
    fam = FAMILIES[family]
    size: ModelSize | None = model_size(config.model)
    if size is None or abs(size.denoiser / fam.unet_params - 1) <= SAME_SIZE:
        return fam
    ratio = size.denoiser / fam.unet_params
    return replace(
        fam,
        name=f"{_model_name(config.model)} ({size.denoiser / 1e6:.3g}M UNet parameters)",
        unet_params=size.denoiser,
        text_encoder_params=size.text_encoders,
        vae_params=size.vae,
        activation_gib=fam.activation_gib * ratio,
        activation_gib_checkpointed=fam.activation_gib_checkpointed * ratio,
        scaled_from=fam.name,
    )


def format_gib(value: float) -> str:
    """GiB for a reader: one decimal from 1 GiB up (130 GiB reads "130.0 GiB", never
    "1.3e+02"), two significant digits below (a toy model's 0.077 GiB is not "0.1" or "0")."""
    return f"{value:.1f} GiB" if value >= 1 else f"{value:.2g} GiB"


@dataclass(frozen=True)
class MemoryEstimate:
    family: str
    parts: dict[str, float]  # GiB per part, in the order they are explained
    name: str = ""  # the model described, when not the family's own figures
    scaled_from: str | None = None

    @property
    def total_gib(self) -> float:
        return sum(self.parts.values())

    def fits(self, device: str) -> bool:
        return self.total_gib <= DEVICES[device].memory_gib

    def describe(self) -> str:
        parts = ", ".join(f"{name} {gib:.1f}" for name, gib in self.parts.items() if gib >= 0.05)
        total = format_gib(self.total_gib)
        if self.family in FLOW_ESTIMATES:
            name = FLOW_ESTIMATES[self.family].name
            return f"about {total} ({parts}) for {name}; rough, derived from reported figures, not yet measured"
        if self.scaled_from:
            return f"about {total} ({parts}) for {self.name}; rough, scaled from {self.scaled_from} by parameter count"
        return f"about {total} ({parts}) for {self.name or FAMILIES[self.family].name}; rough, +-30%"


def estimate_memory(config: TrainConfig, family: str | None = None, device: str = REFERENCE_GPU) -> MemoryEstimate:
    """Peak memory of one GPU (or of the CPU: its RAM) training `config` (see the module
    docstring; SD3.5 and FLUX: `edlib.model.estimate_flow`)."""
    family = family or model_family(config.model)
    if family in FLOW_ESTIMATES:
        return MemoryEstimate(family, flow_memory_parts(config, family, trained_bytes_per_parameter(config)))
    fam = sized_family(config, family)
    on_cpu = device == CPU
    precision_bytes = 4 if config.mixed_precision == "no" else 2  # frozen weights, activations
    state_bytes = trained_bytes_per_parameter(config)

    if config.method == "full":
        trained, frozen = fam.unet_params, 0.0
    else:  # LoRA adapters, new embeddings, a hypernetwork: a few million parameters; the UNet stays frozen
        trained, frozen = 0.0, fam.unet_params
    text_trains = config.method == "full" and config.text_encoder_lr > 0
    if text_trains:
        trained += fam.text_encoder_params
    elif not config.cache_text_embeddings or on_cpu:  # cached: the text encoders wait in CPU memory
        frozen += fam.text_encoder_params
    if config.cache_latents == "no" or on_cpu:  # cached: so does the VAE
        frozen += fam.vae_params

    per_image = fam.activation_gib_checkpointed if config.gradient_checkpointing else fam.activation_gib
    pixels = (config.resolution / fam.ref_resolution) ** 2
    activations = per_image * pixels * config.batch_size * precision_bytes / 2
    parts = {
        "trained weights, gradients, optimizer": trained * state_bytes / GIB,
        "frozen weights": frozen * precision_bytes / GIB,
        "activations": activations,
    }
    if not on_cpu:
        parts["CUDA context"] = 1.0
    return MemoryEstimate(family, parts, fam.name, fam.scaled_from)


# -- time and cost ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Throughput:
    images_per_s: float
    measured: bool  # True only for a measured H100 row used as is
    basis: str  # where the figure comes from, in words


def throughput(config: TrainConfig, gpu: str = REFERENCE_GPU, family: str | None = None) -> Throughput:
    """Training images per second of `config` on one `gpu`, or on the `CPU` (see the module
    docstring)."""
    if gpu not in DEVICES:
        raise KeyError(f"unknown GPU {gpu!r}; known: {', '.join(DEVICES)}")
    fam_key = family or model_family(config.model)
    if gpu == CPU:
        return _cpu_throughput(config, fam_key)
    if fam_key in FLOW_ESTIMATES:
        rate, basis = flow_images_per_s(config, fam_key, GPUS[gpu].bf16_tflops)
        return Throughput(rate, False, f"{basis} ({gpu})")
    fam = sized_family(config, fam_key)
    row, factors = _nearest_row(config, fam_key)
    rate = MEASURED[(fam_key, row)] if (fam_key, row) in MEASURED else MEASURED[(fam_key, "full")]
    if (fam_key, row) not in MEASURED:  # e.g. SDXL LoRA: SD1.5's ratio to its full row
        factors.append(("no row of its own, SD1.5's ratio", MEASURED[("sd15", row)] / MEASURED[("sd15", "full")]))
    far = ""
    if fam.scaled_from:
        factors.append((f"{fam.name} instead of {fam.scaled_from}'s", FAMILIES[fam_key].unet_params / fam.unet_params))
        far = _far(fam.unet_params / FAMILIES[fam_key].unet_params)
    if config.resolution != fam.ref_resolution:
        factors.append((f"{config.resolution} px instead of {fam.ref_resolution}", (fam.ref_resolution / config.resolution) ** 2))
    if config.mixed_precision == "no":
        factors.append(("fp32 instead of bf16", 0.5))
    if gpu != REFERENCE_GPU:
        factors.append((f"{gpu} TFLOPs / H100", GPUS[gpu].bf16_tflops / GPUS[REFERENCE_GPU].bf16_tflops))
    label = f"{FAMILIES[fam_key].name} {ROW_LABELS[row]}, batch {MEASURED_BATCH[fam_key]}"
    return _scaled(rate, factors, "H100", label, f"GPU_FIGURES.md: {MEASURED_SOURCE.get((fam_key, row))}", far)


def _scaled(rate: float, factors: list[tuple[str, float]], device: str, label: str, source: str, far: str) -> Throughput:
    """A measured row's rate times each (why, factor): the row as measured when there is no
    factor (with its `source`), else a scaled estimate that names every factor."""
    for _, factor in factors:
        rate *= factor
    if not factors:
        return Throughput(rate, True, f"measured on {'an' if device == 'H100' else 'a'} {device}: {label} ({source})")
    scaled = "; ".join(why if factor == 1.0 else f"{why} x{factor:.2g}" for why, factor in factors)
    return Throughput(rate, False, f"scaled estimate from the {device} row {label}: {scaled}{far}")


def _far(size_ratio: float) -> str:
    """A caveat for a model far from the measured one's size: a small model's step is mostly
    fixed overhead, so scaling from a small model to a large one is pessimistic, the other way
    optimistic."""
    if size_ratio > 10:
        return " (far from the measured size: likely pessimistic)"
    if size_ratio < 0.1:
        return " (far from the measured size: likely optimistic, a small model's step is mostly overhead)"
    return ""


def _cpu_throughput(config: TrainConfig, family: str) -> Throughput:
    """The CPU row (`CPU_MEASURED`) scaled to `config`: by UNet parameters (a flow model's
    transformer), pixels, and the H100 rows' ratio for other settings."""
    measured = CPU_MEASURED
    if family in FLOW_ESTIMATES:
        params = FLOW_ESTIMATES[family].transformer_params
        name = FLOW_ESTIMATES[family].name
    else:
        fam = sized_family(config, family)
        params, name = fam.unet_params, fam.name
    # Settings as ratios of measured rows; the text encoder of the measured run trains, so it
    # ran every step whether or not a config caches its embeddings.
    row, factors = _nearest_row(config.model_copy(update={"cache_text_embeddings": True}), "sd15")
    if row != "full":
        factors.append((ROW_LABELS[row], MEASURED[("sd15", row)] / MEASURED[("sd15", "full")]))
    if abs(params / measured["unet_params"] - 1) > SAME_SIZE:
        factors.append((f"{name} instead of the world model's 5.03M UNet parameters", measured["unet_params"] / params))
    if config.resolution != measured["resolution"]:
        factors.append((f"{config.resolution} px instead of {measured['resolution']}", (measured["resolution"] / config.resolution) ** 2))
    label = f"edlib:world full fine-tune, fp32, {measured['resolution']} px, batch {measured['batch_size']}, one core"
    return _scaled(measured["images_per_s"], factors, "CPU", label, "bench/cpu_world.py", _far(params / measured["unet_params"]))


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
    price = DEVICES[gpu].price_per_hour if price_per_hour is None else price_per_hour
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
