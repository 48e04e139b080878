"""The figures the estimates start from (`edlib.model.estimate` explains how they are used):
the Stable Diffusion families' parameter counts and activation constants, the images/s
measured on an H100 per setting, the GPUs an estimate can be for with their datasheet
TFLOPs and example prices, and the CPU row measured by bench/cpu_world.py."""

from __future__ import annotations

from dataclasses import dataclass

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
    scaled_from: str | None = None  # a model of another size: the family its figures are scaled from


# Activation constants fitted to GPU_FIGURES.md: (peak - weights - grads - optimizer) / batch.
# SD1.5 full, AdamW, batch 16: (30.2 - 16 B x 860M) / 16 = 1.09 GiB (LoRA rows give 1.09 too);
# with checkpointing: 0.16 (full, 8-bit) and 0.26 (LoRA), taken as 0.2.
# SDXL full, AdamW, batch 4: (66.4 - 16 B x 2.57B) / 4 = 7.0 GiB; checkpointed + 8-bit: 0.42.
# Parameter counts: the published configs in edlib.model.architectures (tests/bench checks
# them): SDXL UNet 2,567.5M, CLIP-L 123.1M + OpenCLIP-bigG 694.7M, VAE 83.7M.
FAMILIES = {
    "sd15": Family("SD1.5", 512, 859.5e6, 123.1e6, 83.7e6, 1.09, 0.2),
    "sdxl": Family("SDXL", 1024, 2567.5e6, 817.7e6, 83.7e6, 7.0, 0.42),
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

CPU = "CPU (this machine)"
# Measured by bench/cpu_world.py: `edlib:world` (5.03M-parameter UNet), full fine-tune with the
# text encoder, cached latents, fp32, 64 px, batch 4, AdamW, one torch thread: 13.6 images per
# second of the training thread's CPU time (what one quiet core delivers; a machine with more
# cores trains faster, so for it this is conservative). Scaled like the GPU rows.
CPU_MEASURED = {"images_per_s": 13.6, "unet_params": 5_029_732, "resolution": 64, "batch_size": 4}


def _ram_gib() -> float:
    """This machine's memory (what a CPU run's estimate is compared with)."""
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB
    except (AttributeError, ValueError, OSError):  # not a POSIX system: no claim
        return float("inf")


# Every device an estimate can be for: the CPU and the GPUs above.
DEVICES = {CPU: Gpu(CPU, _ram_gib(), 0.0, 0.0), **GPUS}


def local_device() -> str:
    """The device a run started here trains on, as a key of `DEVICES`: the GPU of this
    machine when it is in the table (by its name and memory), the reference GPU for another
    GPU, the CPU without one."""
    import torch

    if not torch.cuda.is_available():
        return CPU
    name = torch.cuda.get_device_name(0).upper()
    memory = torch.cuda.get_device_properties(0).total_memory / GIB
    for key, gpu in GPUS.items():
        model = key.rsplit(" ", 1)[0].upper()  # "A100 80GB" -> "A100"
        if model in name and abs(gpu.memory_gib - memory) < 0.15 * gpu.memory_gib:
            return key
    return REFERENCE_GPU
