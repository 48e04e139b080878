"""Everything a run needs before its first step: the accelerator, the data, and the trained
things (models placed on their devices, method, optimizer, LR schedule, EMA)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from accelerate import Accelerator, PartialState
from accelerate.state import AcceleratorState

from edlib.data.scan import scan
from edlib.data.types import DataRootError, ScanResult
from edlib.model.block_swap import enable_block_swap
from edlib.model.config import ConfigError, TrainConfig
from edlib.model.ema import make_ema
from edlib.model.flow_config import describe_flow, family_conflicts, flow_settings
from edlib.model.lr import make_lr_scheduler
from edlib.model.methods import Method, make_method
from edlib.model.models import enable_gradient_checkpointing, load_models
from edlib.model.offload import home_device
from edlib.model.optim import make_optimizer
from edlib.model.plan import preview_run
from edlib.train.run_dir import Reporter
from edlib.train.validation import validation_set


@dataclass
class Training:
    """What trains and how: the model bundle, the method, and the optimizer, LR schedule and
    EMA over the method's trainable parameters. `lr_steps` is the length the LR schedule is
    laid out for (saved with each checkpoint: a resume keeps it, whatever the data says now)."""

    models: Any
    method: Method
    optimizer: Any
    lr_scheduler: Any
    ema: Any | None
    trainable: list[torch.nn.Parameter]
    lr_steps: int


def make_accelerator(config: TrainConfig) -> Accelerator:
    """accelerate keeps one process-wide state and refuses a second Accelerator with another
    mixed precision; a notebook may well train twice in one kernel (fp16, then bf16). In a
    single process nothing else depends on that state, so it is reset first; the process
    group of a multi-process launch (PartialState) is left alone."""
    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("tensorboard: true needs the tensorboard package (pip install tensorboard), or set it to false")
    process_state = PartialState._shared_state  # read without creating it: creating decides the backend
    if process_state and process_state.get("num_processes", 1) == 1:
        AcceleratorState._reset_state()
    enable_tf32()
    return Accelerator(
        mixed_precision=config.mixed_precision,
        log_with="tensorboard" if config.tensorboard else None,
        project_dir=str(config.run_dir),
    )


def enable_tf32() -> None:
    """fp32 matrix products and convolutions on TF32 tensor cores, on Ampere and later GPUs
    (compute capability 8+): what stays fp32 under mixed precision (a VAE kept in fp32, a
    full-precision run) runs several times faster, with a 10-bit mantissa in the products and
    fp32 accumulation, which diffusion training does not notice (diffusers' scripts offer the
    same switch, `--allow_tf32`). bf16/fp16 work is unaffected; on a CPU nothing changes."""
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] < 8:
        return
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and conv is not None and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = "tf32"  # the API of torch 2.9 and later
        conv.fp32_precision = "tf32"
    else:
        matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def load_data(config: TrainConfig, report: Reporter) -> tuple[ScanResult, ScanResult | None]:
    """The scanned data root (errors stop the run before any model loads; warnings are
    reported) and the images held out for validation, if any."""
    data = scan(config.data_root, follow_outside_links=config.follow_outside_links)
    if data.errors:
        raise DataRootError(f"data root {config.data_root} has errors:\n  " + "\n  ".join(data.errors))
    for warning in data.warnings:
        report.warning(warning)
    return validation_set(config, data)


def planned_steps(data: ScanResult, config: TrainConfig, num_processes: int = 1) -> int:
    """Optimizer steps the LR schedule is laid out for: exactly what the preview shows
    (ceil(batches / accumulation) per epoch, summed, capped by max_steps)."""
    return preview_run(data, config, num_processes=num_processes, lr=False).total_steps


def build_training(config: TrainConfig, accelerator: Accelerator, report: Reporter, total_steps: int) -> Training:
    """Load the model, set up the method, place the modules, and make the optimizer, the LR
    schedule (laid out for `total_steps`: the run's plan when it starts) and the EMA."""
    models = load_models(
        config.model,
        prediction_type=config.prediction_type,
        zero_terminal_snr=config.zero_terminal_snr,
        attention=config.attention,
        vae=config.vae,
        max_sequence_length=config.max_sequence_length,
    )
    check_family(config, models, report)
    if config.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        report.warning(
            "mixed_precision: fp16 on the CPU: there is no fp16 autocast on CPUs, so the trained weights compute in "
            "fp32 while the frozen modules are kept in fp16 (slow on most CPUs). For a CPU run use "
            "mixed_precision: no (or bf16); fp16 is for GPUs without bf16, such as a T4"
        )
    if config.full_bf16 and not config.stochastic_rounding:
        report.warning(
            "full_bf16 with stochastic_rounding: false: weight updates under half a bf16 step (about 1/512 of a "
            f"weight) are rounded away, so at unet_lr {config.unet_lr:g} many weights may not move; watch the samples"
        )
    method = make_method(config)
    method.setup(models)
    place_models(models, method, config, accelerator)  # before the optimizer: fused AdamW needs CUDA params
    optimizer = make_optimizer(
        config.optimizer,
        method.param_groups(models),
        config.optimizer_args,
        stochastic_rounding=config.full_bf16 and config.stochastic_rounding,
    )
    trainable = method.trainable_parameters(models)
    lr_scheduler = lr_schedule(config, optimizer, total_steps)
    return Training(models, method, optimizer, lr_scheduler, make_ema(config.ema_decay, trainable), trainable, total_steps)


def lr_schedule(config: TrainConfig, optimizer, total_steps: int):
    """The config's LR schedule over `total_steps` optimizer steps."""
    return make_lr_scheduler(
        optimizer,
        config.lr_scheduler,
        total_steps=total_steps,
        warmup_steps=config.lr_warmup_steps,
        num_cycles=config.lr_num_cycles,
        power=config.lr_power,
    )


def check_family(config: TrainConfig, models, report: Reporter) -> None:
    """What the config asks that this model's family cannot do (a hub model's family is
    known only now), and what a flow family trains with, in the log."""
    problems = family_conflicts(config, models.family)
    if problems:
        raise ConfigError(f"{config.model} is a {models.family.upper()} model: " + "; ".join(problems))
    if config.text_encoder_2_lr is not None and models.family not in ("sdxl", "sd3"):
        report.warning(f"text_encoder_2_lr is set, but {config.model} has no second CLIP encoder (SDXL and SD3 do): ignored")
    if models.flow_matching:
        guidance = bool(getattr(models.unet.config, "guidance_embeds", False))
        settings = flow_settings(config, models.family)
        report.log(describe_flow(settings, models.family, models.max_sequence_length, guidance))
        if guidance and config.flux_guidance != 1.0:
            report.warning(
                f"flux_guidance: {config.flux_guidance:g}; the trainers that train FLUX.1-dev well feed 1.0, which keeps "
                "its guidance distillation; other values teach it classifier-free guidance, which it then needs when sampling"
            )


def place_models(models, method: Method, config: TrainConfig, accelerator: Accelerator) -> None:
    """Trainable modules stay fp32 (autocast lowers their matmuls), or bf16 with `full_bf16`;
    frozen ones go in the mixed-precision dtype (half the memory) in eval mode, except a VAE
    that overflows in fp16 (SDXL's: its config says `force_upcast`), which stays fp32 under
    fp16 unless the model's VAE is an fp16-safe one. Frozen modules go to the device, or stay
    in CPU memory when the run caches all they compute (`edlib.model.offload`).

    Only the UNet is wrapped by accelerate (DDP on several processes). A training text
    encoder is not: `encode_prompts` needs the plain module, so its gradients are averaged
    across processes by `edlib.train.step.average_gradients` instead of by DDP."""
    trainable = method.trainable_modules(models)
    trained_dtype = torch.bfloat16 if config.full_bf16 else None
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(models, text_encoders=tuple(n for n in models.text_encoder_names if n in trainable))
    for name in models.module_names:
        module = getattr(models, name)
        if name == "unet" and config.channels_last:  # its inputs follow in `edlib.train.step.sample_losses`
            module.to(memory_format=torch.channels_last)
        if name not in trainable:
            device = home_device(name, config, models, accelerator.device)
            module.to(device, dtype=frozen_dtype(name, module, config.mixed_precision)).eval()
        elif name == "unet":
            unet = accelerator.prepare(module.to(dtype=trained_dtype).train())
            if getattr(config, "blocks_to_swap", 0):  # after prepare, which put every block on the device
                swap_blocks_of(module, config, accelerator)
            # Compiled last, around the DDP wrapper; accelerate's unwrap_model sees through
            # both when the checkpoint takes the plain module's weights.
            setattr(models, name, torch.compile(unet) if config.compile else unet)
        else:
            module.to(accelerator.device, dtype=trained_dtype).train()


def swap_blocks_of(transformer, config: TrainConfig, accelerator: Accelerator) -> None:
    """`blocks_to_swap` of the transformer's blocks wait in CPU memory (`edlib.model.block_swap`)."""
    if accelerator.num_processes > 1:
        raise ConfigError("blocks_to_swap: works in a single process; with several GPUs each holds the whole model")
    enable_block_swap(transformer, config.blocks_to_swap, accelerator.device)


def frozen_dtype(name: str, module: torch.nn.Module, mixed_precision: str) -> torch.dtype | None:
    """The dtype a frozen module is kept in (None: as loaded): the mixed-precision dtype,
    except a VAE whose config asks diffusers to upcast it (`force_upcast`: SDXL's VAE gives
    inf/NaN latents in fp16), which stays fp32 under fp16. An fp16-safe VAE (config key
    `vae`) does not ask, and runs in fp16."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(mixed_precision)
    if name == "vae" and dtype == torch.float16 and module.config.get("force_upcast", False):
        return torch.float32
    if dtype == torch.float16 and type(module).__name__ == "T5EncoderModel":
        return torch.float32  # T5's activations overflow fp16 (transformers keeps parts of it in fp32 for that)
    return dtype


def unwrapper(accelerator: Accelerator):
    """The plain module inside accelerate's DDP and torch.compile wrappers, whose state-dict
    keys are the model's own (no `module.` or `_orig_mod.` prefix)."""
    return partial(accelerator.unwrap_model, keep_torch_compile=False)
