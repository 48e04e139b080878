"""Config keys of the flow-matching families (SD3/SD3.5, FLUX.1), of LoRA target presets and
LoRA+, and of the memory savers for large transformers; their defaults per family and where
each default comes from. Imports no torch (the config schema uses it).

`TrainConfig` (edlib.model.config) inherits these keys from `FamilyKeys`. A key left null takes
its family's default (`FLOW_DEFAULTS`), decided when the model's family is known, and the run's
log says what was used (`describe_flow`).

Timestep (noise level) sampling draws sigma in [0, 1] per sample, then applies a shift:

- ``uniform``: sigma ~ U(0, 1) (sd-scripts ``--timestep_sampling uniform``).
- ``logit_normal``: sigma = sigmoid(N(logit_mean, logit_std)) (SD3 paper, Esser et al. 2024,
  sec. 3.1; diffusers' ``--weighting_scheme logit_normal``, the default of its
  ``train_dreambooth_lora_sd3.py``).
- ``sigmoid``: sigma = sigmoid(sigmoid_scale * N(0, 1)) (x-flux; sd-scripts
  ``--timestep_sampling sigmoid``): the same distribution as logit_normal with mean 0 and std
  sigmoid_scale, under the name FLUX trainers use.
- ``flux_shift``: ``sigmoid``, then FLUX.1's resolution-dependent shift
  ``sigma' = e^mu / (e^mu + 1/sigma - 1)`` with mu rising linearly from 0.5 at 256 packed
  tokens to 1.15 at 4096 (1024 x 1024 px), as FLUX.1's scheduler shifts its sampling steps
  (sd-scripts ``--timestep_sampling flux_shift``, recommended in its docs/flux_train_network.md;
  OneTrainer's dynamic timestep shifting). At 1024 px that is a static shift of e^1.15 = 3.16.

Then ``timestep_shift`` s (static): ``sigma' = s*sigma / (1 + (s - 1)*sigma)``; s > 1 trains
more at high noise. SD3's scheduler ships s = 3.0, and diffusers' SD3 script samples sigmas from
that shifted schedule; FLUX's default is 1 (its shift is the resolution-dependent one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

TIMESTEP_SAMPLING = ("uniform", "logit_normal", "sigmoid", "flux_shift")
LORA_TARGETS = ("attention", "attention_ff", "all_linear")

# Per-family defaults, each with its source (module docstring, docs/methods.md).
FLOW_DEFAULTS: dict[str, dict[str, Any]] = {
    # sd-scripts docs recommend flux_shift for FLUX.1; raw velocity loss (sd-scripts
    # --model_prediction_type raw, diffusers' FLUX scripts); diffusers' FLUX LoRA layers
    # (attention and feed-forward of the double blocks), here with the single blocks' too.
    "flux": {"timestep_sampling": "flux_shift", "timestep_shift": 1.0, "flow_target": "velocity", "lora_targets": "attention_ff"},
    # diffusers' train_dreambooth_lora_sd3.py as written: logit-normal(0, 1) on SD3's 3.0-shifted
    # schedule, outputs preconditioned to x0 (--precondition_outputs 1), attention-only LoRA.
    "sd3": {"timestep_sampling": "logit_normal", "timestep_shift": 3.0, "flow_target": "x0", "lora_targets": "attention"},
}
# T5 tokens per prompt: sd-scripts and SimpleTuner use 512 for dev and 256 for schnell (what
# BFL trained them with); diffusers' SD3 pipeline and sd-scripts use 256.
SEQUENCE_LENGTHS = {("flux", True): 512, ("flux", False): 256, ("sd3", True): 256, ("sd3", False): 256}
FLOW_ONLY_KEYS = ("timestep_sampling", "flow_target", "max_sequence_length", "lora_targets")


def default_sequence_length(family: str, guidance_embeds: bool) -> int:
    """The T5 length of a family (FLUX: dev, with its guidance embedder, or schnell)."""
    return SEQUENCE_LENGTHS[(family, guidance_embeds)]


class FamilyKeys(BaseModel):
    """The keys this module adds to `TrainConfig` (see the module docstring)."""

    timestep_sampling: Literal[TIMESTEP_SAMPLING] | None = Field(  # type: ignore[valid-type]
        None,
        description="SD3/FLUX: how the noise level (sigma) of each sample is drawn: `uniform`, `logit_normal` "
        "(`logit_mean`, `logit_std`), `sigmoid` (`sigmoid_scale`) or `flux_shift` (sigmoid, then FLUX.1's "
        "resolution-dependent shift). Null: the family's default, `flux_shift` for FLUX (sd-scripts' "
        "recommendation), `logit_normal` for SD3 (diffusers' SD3 script, the SD3 paper). docs/methods.md has sources.",
    )
    logit_mean: float = Field(0.0, description="`logit_normal` sampling: mean of the normal before the sigmoid.")
    logit_std: float = Field(1.0, gt=0.0, description="`logit_normal` sampling: standard deviation of the normal.")
    sigmoid_scale: float = Field(
        1.0, gt=0.0, description="`sigmoid` and `flux_shift` sampling: scale of the normal before the sigmoid (larger: more uniform)."
    )
    timestep_shift: float | None = Field(
        None,
        gt=0.0,
        description="SD3/FLUX: static shift s of the sampled sigma, s*sigma/(1+(s-1)*sigma); above 1 trains more at high "
        "noise. Null: 3.0 for SD3 (its scheduler's shift, as diffusers' SD3 script samples), 1.0 for FLUX.",
    )
    flow_target: Literal["velocity", "x0"] | None = Field(
        None,
        description="SD3/FLUX: the loss target. `velocity` (noise - latents, FLUX trainers' raw loss) or `x0` (the "
        "prediction preconditioned to a clean-latent estimate, diffusers' and sd-scripts' SD3 default; the velocity "
        "loss weighted by sigma^2). Null: `velocity` for FLUX, `x0` for SD3.",
    )
    flux_guidance: float = Field(
        1.0,
        ge=0.0,
        description="FLUX.1-dev: the guidance value fed to its guidance embedding while training. 1.0 keeps the "
        "distillation intact (sd-scripts, SimpleTuner, ai-toolkit, OneTrainer all train with 1.0); sample with the usual "
        "3.5. Ignored by models without the embedding (schnell, SD3).",
    )
    max_sequence_length: int | None = Field(
        None,
        ge=1,
        le=512,
        description="SD3/FLUX: T5 tokens per caption (longer captions are cut). Null: 512 for FLUX.1-dev, 256 for "
        "schnell and SD3. Samples use the run's length.",
    )
    lora_targets: Literal[LORA_TARGETS] | None = Field(  # type: ignore[valid-type]
        None,
        description="SD3/FLUX LoRA: which layers of the transformer get adapters: `attention` (q, k, v, out of every "
        "attention), `attention_ff` (and the feed-forward layers), `all_linear` (every linear layer of the blocks, "
        "modulation included, as sd-scripts). Null: "
        "`attention_ff` for FLUX, `attention` for SD3 (diffusers' scripts). SD1/SDXL LoRAs use kohya's layers.",
    )
    loraplus_lr_ratio: float | None = Field(
        None,
        gt=0.0,
        description="LoRA+ (Hayou et al. 2024): the adapters' up (B) matrices train at this multiple of the learning "
        "rate (kohya's `loraplus_lr_ratio`; 16 is the paper's suggestion). Null: off.",
    )
    fp8_base: bool = Field(
        False,
        description="LoRA: store the frozen base model's linear and convolution weights in fp8 (e4m3), computing in "
        "the mixed-precision dtype (diffusers' layerwise casting, as kohya's `--fp8_base`): about half the memory of "
        "bf16 weights. Needs `mixed_precision: bf16` (or fp16).",
    )
    blocks_to_swap: int = Field(
        0,
        ge=0,
        description="SD3/FLUX LoRA: keep this many transformer blocks' frozen weights in CPU memory, each brought to "
        "the GPU only while it computes (with `gradient_checkpointing`), to fit smaller cards; slower. 0: off.",
    )

    @model_validator(mode="after")
    def _family_keys(self):
        from edlib.model.identify import model_family

        family = model_family(getattr(self, "model", ""))
        problems = family_conflicts(self, family)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def family_conflicts(config, family: str | None) -> list[str]:
    """What in ``config`` does not fit a model of ``family`` (None: unknown, only the checks
    that need no family)."""
    problems = []
    if config.blocks_to_swap and config.method == "full":
        problems.append("blocks_to_swap: swaps frozen base weights; a full fine-tune trains them (use method: lora)")
    if config.blocks_to_swap and not config.gradient_checkpointing:
        problems.append("blocks_to_swap: needs gradient_checkpointing: true (a swapped block recomputes in the backward pass)")
    if config.fp8_base and config.method == "full":
        problems.append("fp8_base: stores frozen weights in fp8; a full fine-tune trains them (use method: lora)")
    if config.blocks_to_swap and config.compile:
        problems.append("blocks_to_swap: its hooks move weights between calls, which torch.compile cannot follow; set compile: false")
    if config.fp8_base and config.blocks_to_swap:
        problems.append("fp8_base with blocks_to_swap: not tested together yet; use one of them")
    if config.fp8_base and config.mixed_precision == "no":
        problems.append("fp8_base: computes in the mixed-precision dtype; set mixed_precision: bf16")
    if family is None:
        return problems
    name = family.upper()
    if family in FLOW_DEFAULTS:
        if config.prediction_type is not None:
            problems.append(f"prediction_type: {name} is trained by flow matching (velocity); leave it unset")
        if config.zero_terminal_snr:
            problems.append(f"zero_terminal_snr: {name} reaches pure noise at sigma 1 already; set it to false")
        if config.min_snr_gamma:
            problems.append(f"min_snr_gamma: is for DDPM noise schedules; {name} weighs noise levels with timestep_sampling")
        if config.method == "textual_inversion":
            problems.append(f"method: textual_inversion is not offered for {name} (the tools that load {name} do not load embeddings)")
        if config.method == "hypernetwork":
            problems.append(f"method: hypernetwork is for SD1.x, SD2.x and SDXL (UNet attention), not {name}")
        if config.conv_dim is not None:
            problems.append(f"conv_dim: {name}'s transformer has no convolutions to adapt; set it to null")
        if family == "flux" and (config.text_encoder_2_lr or 0) > 0:
            problems.append("text_encoder_2_lr: FLUX's second encoder is T5, which stays frozen; set it to 0 or null")
        if family == "flux" and config.clip_skip != 1:
            problems.append("clip_skip: FLUX reads CLIP's pooled output only, which clip_skip does not change; set it to 1")
    else:
        wrong = [key for key in FLOW_ONLY_KEYS if getattr(config, key) is not None]
        wrong += ["blocks_to_swap"] if config.blocks_to_swap else []
        if wrong:
            problems.append(f"{', '.join(wrong)}: for SD3/FLUX models only; this model is {name}")
        if "peft-lora" in (config.export_formats or ()):
            problems.append(f"export_formats: peft-lora: is offered for SD3/FLUX LoRAs; this model is {name} (use kohya-lora)")
    return problems


@dataclass(frozen=True)
class FlowSettings:
    """The flow-matching settings a run trains with: the config's, with nulls filled from its family."""

    timestep_sampling: str
    logit_mean: float
    logit_std: float
    sigmoid_scale: float
    timestep_shift: float
    flow_target: str
    guidance: float


def flow_settings(config, family: str) -> FlowSettings:
    defaults = FLOW_DEFAULTS[family]

    def pick(key):
        value = getattr(config, key)
        return defaults[key] if value is None else value

    return FlowSettings(
        timestep_sampling=pick("timestep_sampling"),
        logit_mean=config.logit_mean,
        logit_std=config.logit_std,
        sigmoid_scale=config.sigmoid_scale,
        timestep_shift=pick("timestep_shift"),
        flow_target=pick("flow_target"),
        guidance=config.flux_guidance,
    )


def describe_flow(settings: FlowSettings, family: str, sequence_length: int | None, guidance_embeds: bool) -> str:
    """One log line of what a flow run trains with."""
    how = {
        "uniform": "uniform",
        "logit_normal": f"logit-normal({settings.logit_mean:g}, {settings.logit_std:g})",
        "sigmoid": f"sigmoid(scale {settings.sigmoid_scale:g})",
        "flux_shift": f"sigmoid(scale {settings.sigmoid_scale:g}) with FLUX's resolution-dependent shift",
    }[settings.timestep_sampling]
    shift = f", shift {settings.timestep_shift:g}" if settings.timestep_shift != 1 else ""
    guidance = f", guidance {settings.guidance:g}" if guidance_embeds else ""
    return f"{family.upper()} flow matching: sigma {how}{shift}, target {settings.flow_target}, T5 length {sequence_length}{guidance}"
