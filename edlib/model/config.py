"""The training configuration: one validated model, loaded from YAML with `key=value` overrides.

Every key is documented by its field description; `config_files.config_reference_markdown()`
turns those into docs/config.md, so the reference cannot drift from the code. Reading YAML
files and `key=value` overrides is `config_files`; the keys fixed on resume are `resume_keys`. Defaults are what a newcomer
fine-tuning SD1.5 on a single GPU should use.

Keys are flat (as in the YAML files users write and the CLI overrides they type), and a
validation error names the key, what is wrong and the allowed values.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from edlib.data.buckets import resolution_problem
from edlib.data.schedule import DEFAULT_SEED
from edlib.model.config_checks import key_conflicts
from edlib.model.config_errors import describe_error, is_number
from edlib.model.flow_config import FamilyKeys
from edlib.model.hypernetwork_settings import HypernetworkKeys, config_problems
from edlib.model.lr import LR_SCHEDULERS

OPTIMIZERS = ("adamw", "adamw8bit", "lion", "prodigy", "adafactor")
STOCHASTIC_ROUNDING_OPTIMIZERS = ("adamw", "adamw8bit")  # edlib.model.sr_optim implements bf16 stochastic rounding for these
METHODS = ("full", "lora", "textual_inversion", "hypernetwork")
# What each method's result can be exported as (DESIGN.md "Output formats"), and what a run
# exports when it ends unless `export_formats` says otherwise: the one file A1111 and
# ComfyUI users load.
EXPORT_FORMATS = {
    "full": ("diffusers", "single-file"),
    "lora": ("kohya-lora", "peft-lora"),
    "textual_inversion": ("a1111-embedding",),
    "hypernetwork": ("a1111-hypernetwork",),
}
END_EXPORT_FORMATS = {
    "full": "single-file",
    "lora": "kohya-lora",
    "textual_inversion": "a1111-embedding",
    "hypernetwork": "a1111-hypernetwork",
}
# SD3/FLUX: a full fine-tune ends as a diffusers folder (no single-file export for them yet); an
# SD3 LoRA in diffusers/PEFT layout, the one diffusers and ComfyUI both load (diffusers ignores
# kohya SD3 LoRAs without a word).
FAMILY_END_EXPORT_FORMATS = {("sd3", "full"): "diffusers", ("flux", "full"): "diffusers", ("sd3", "lora"): "peft-lora"}
DEFAULT_RESOLUTION = 512  # when the model's own size cannot be read (see `resolution_for`)


def resolution_for(model: str | Path) -> int:
    """The resolution `model` trains at when none is given: its native size
    (`edlib.model.identify.native_resolution`) when that is a multiple of 64, else
    `DEFAULT_RESOLUTION`. Errors reading the model (OSError, ValueError) pass to the caller."""
    from edlib.model.identify import native_resolution

    native = native_resolution(model)
    return native if native and native % 64 == 0 else DEFAULT_RESOLUTION


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names every offending key."""


class TrainConfig(FamilyKeys, HypernetworkKeys):
    """Everything a training run needs. See docs/config.md for the reference. The keys of
    SD3/FLUX, LoRA targets and LoRA+, fp8 and block swapping come from
    `edlib.model.flow_config.FamilyKeys`, the hypernetwork's from
    `edlib.model.hypernetwork_settings.HypernetworkKeys`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # --- what to train on -------------------------------------------------------------------
    model: str = Field(
        "stable-diffusion-v1-5/stable-diffusion-v1-5",
        description="Base model: a Hugging Face hub id, a local diffusers folder, or a single "
        "`.safetensors`/`.ckpt` file. A relative path resolves against the config file's folder. "
        "`edlib:world` is the small toy-world model that ships with edlib (64 px, trains on a CPU; the demo's).",
    )
    vae: str | None = Field(
        None,
        description="Replace the model's VAE: a hub id or a local folder of a diffusers VAE (its config.json and "
        "weights), e.g. `madebyollin/sdxl-vae-fp16-fix`, the fp16-safe SDXL VAE for cards without bf16 (T4). "
        "Null: the model's own.",
    )
    data_root: Path = Field(
        description="Folder tree of training images (required). Every image below it is a training "
        "item; `multiply.txt` and `loss_scale.txt` control each folder."
    )
    run_dir: Path = Field(
        Path("runs/train"),
        description="The run folder: config, logs, checkpoints, samples and exports go here. "
        "Resuming continues the run found in this folder.",
    )
    method: str = Field(
        "full",
        description="Training method. `full` fine-tunes the UNet (and the text encoder when "
        "`text_encoder_lr` > 0). `lora` trains LoRA/LoCon adapters (see `network_dim`), "
        "`textual_inversion` trains new words (see `placeholder_tokens`), `hypernetwork` trains an AUTOMATIC1111 "
        "hypernetwork with the model frozen (see `hypernetwork_layer_structure`). docs/methods.md has presets.",
    )
    init_from: Path | None = Field(
        None,
        description="Start a new phase from another run's weights (a run folder or one of its "
        "checkpoints) with a fresh optimizer and LR schedule, e.g. a second phase at a higher "
        "resolution. Null starts from `model`.",
    )

    # --- images and batches -----------------------------------------------------------------
    resolution: int = Field(
        DEFAULT_RESOLUTION,
        ge=64,
        le=4096,
        json_schema_extra={"multipleOf": 64},  # checked by `_multiple_of_64`, whose message says why
        description="Base training resolution in pixels (a multiple of 64). Aspect buckets have "
        "about resolution x resolution pixels. Unset: the model's native size read from its configs "
        "(512 for SD1.x, 768 for SD2.x 768-v, 1024 for SDXL), or 512 when that cannot be read offline.",
    )
    batch_size: int = Field(4, ge=1, le=1024, description="Images per batch on each GPU.")
    gradient_accumulation_steps: int = Field(
        1, ge=1, le=1024, description="Batches accumulated into one optimizer step (effective batch = batch_size x this x GPUs)."
    )
    epochs: int = Field(10, ge=1, le=100_000, description="Number of epochs (passes over the multiplied data root).")
    max_steps: int | None = Field(
        None, ge=1, description="Stop after this many optimizer steps even if epochs remain. Null: run all epochs."
    )
    seed: int = Field(
        DEFAULT_SEED, description="Seed of everything random: the per-epoch schedule, noise, dropout. Same seed, same run."
    )
    write_schedule: bool = Field(
        True, description="Write each epoch's batch schedule to `schedules/` in the run folder before training it."
    )
    follow_outside_links: bool = Field(
        True,
        description="Follow symbolic links in `data_root` that lead outside it (each such folder link is named in a "
        "warning). false: skip them, so a stray link (to /etc, to another project) cannot pull files into training.",
    )

    # --- captions ---------------------------------------------------------------------------
    clip_skip: int = Field(
        1,
        ge=1,
        description="Text encoder layer whose output conditions the UNet, counted from the end: 1 = last "
        "layer (SD default), 2 = penultimate layer (common for anime models). Final layer norm is applied.",
    )
    shuffle_caption: bool = Field(
        False,
        description="Shuffle the tags of every caption each time it is used (the comma-separated parts after "
        "the main prompt). A folder's `shuffle_tags.txt` or `shuffle_tags: true` turns it on for that folder.",
    )
    keep_tokens: int = Field(
        1,
        ge=0,
        description="When tags are shuffled: this many leading parts stay in front, counting the main prompt "
        "as the first. 1 keeps the main prompt first, as EveryDream2 does; 0 shuffles it with the tags "
        "(kohya's keep_tokens 0). A folder trigger always stays first.",
    )
    caption_dropout: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Probability of training a sample with an empty caption (the conditional dropping "
        "rate; helps classifier-free guidance). A folder's `cond_dropout.txt` overrides it.",
    )

    # --- learning rate and optimizer --------------------------------------------------------
    unet_lr: float = Field(1e-6, ge=0.0, description="Learning rate of the UNet (of the transformer for SD3/FLUX).")
    text_encoder_lr: float = Field(
        0.0,
        ge=0.0,
        description="Learning rate of the text encoder. 0 keeps it frozen (bit-identical), the safe default.",
    )
    text_encoder_2_lr: float | None = Field(
        None,
        ge=0.0,
        description="SDXL and SD3: learning rate of the second text encoder (OpenCLIP ViT-bigG). Null: the same as "
        "`text_encoder_lr`; 0 keeps it frozen while the first one trains. (T5, FLUX's second and SD3's third, "
        "stays frozen.)",
    )
    lr_scheduler: Literal[LR_SCHEDULERS] = Field(  # type: ignore[valid-type]
        "constant", description="Learning-rate schedule over the run's optimizer steps."
    )
    lr_warmup_steps: int = Field(0, ge=0, description="Optimizer steps of linear warm-up from 0 to the learning rate.")
    lr_num_cycles: int = Field(1, ge=1, description="Number of hard restarts for `cosine_with_restarts`.")
    lr_power: float = Field(1.0, gt=0.0, description="Power of the `polynomial` decay (1.0 = linear).")
    optimizer: Literal[OPTIMIZERS] = Field(  # type: ignore[valid-type]
        "adamw",
        description="Optimizer. `adamw8bit` needs bitsandbytes and CUDA (`pip install edlib-sd-trainer[gpu]`); "
        "`lion` needs lion-pytorch; `prodigy` needs prodigyopt (use lr 1.0 with it).",
    )
    optimizer_args: dict[str, Any] = Field(
        default_factory=dict,
        description="Extra keyword arguments for the optimizer, e.g. `{weight_decay: 0.01, betas: [0.9, 0.999]}`.",
    )
    max_grad_norm: float | None = Field(
        1.0, gt=0.0, description="Clip the gradient norm to this value. Null turns clipping off."
    )
    ema_decay: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Keep an exponential moving average of the weights with this decay (e.g. 0.9999). Null: off.",
    )

    # --- LoRA / LoCon (method: lora) ---------------------------------------------------------
    network_dim: int = Field(
        16, ge=1, description="LoRA rank: size of the adapters (4-32 for a character or style; higher holds more)."
    )
    network_alpha: float = Field(
        8.0,
        gt=0.0,
        description="LoRA alpha: the adapters' output is scaled by network_alpha / network_dim (as in kohya); "
        "half the rank is a common choice.",
    )
    conv_dim: int | None = Field(
        None,
        ge=1,
        description="LoCon: also adapt the UNet's 3x3 convolutions (ResNet blocks, down/upsamplers) at this "
        "rank, e.g. 8. Null: plain LoRA (attention and feed-forward layers only).",
    )
    conv_alpha: float = Field(4.0, gt=0.0, description="LoCon alpha: convolution adapters scale by conv_alpha / conv_dim.")

    # --- textual inversion (method: textual_inversion) ---------------------------------------
    placeholder_tokens: list[dict[str, Any]] = Field(
        default_factory=list,
        description="New words to learn, each `{token: <ohwx>, init_word: person, num_vectors: 1}`: `token` is "
        "written in captions, `init_word` starts its vectors, `num_vectors` (1-8) sets its capacity. "
        "They train at `text_encoder_lr`.",
    )

    # --- loss and noise ---------------------------------------------------------------------
    prediction_type: Literal["epsilon", "v_prediction"] | None = Field(
        None,
        description="What the UNet predicts. Null takes it from the model's scheduler config (epsilon "
        "for SD1.x, v_prediction for SD2.x 768-v); set it only to override a wrong config.",
    )
    zero_terminal_snr: bool = Field(
        False,
        description="Rescale the noise schedule so the last timestep is pure noise (Lin et al. 2023). Use "
        "with v_prediction; the model must then be sampled with the same rescaled schedule. A model whose "
        "scheduler config has `rescale_betas_zero_snr: true` trains on that schedule even when this is false.",
    )
    noise_offset: float = Field(
        0.0,
        ge=0.0,
        description="Noise offset (adds a per-channel constant to the noise) so the model learns very dark and bright images. Typical: 0.02-0.1.",
    )
    multires_noise_iterations: int = Field(
        0, ge=0, description="Pyramid (multi-resolution) noise levels added to the noise. 0 = off; typical 6-10."
    )
    multires_noise_discount: float = Field(
        0.3, gt=0.0, le=1.0, description="Weight decay per level of the pyramid noise (kohya default 0.3)."
    )
    min_snr_gamma: float | None = Field(
        None,
        gt=0.0,
        description="Min-SNR loss weighting (Hang et al. 2023) with this gamma, 5.0 recommended. Null: off.",
    )

    # --- speed and memory -------------------------------------------------------------------
    mixed_precision: Literal["no", "fp16", "bf16"] = Field(
        "no",
        description="Mixed precision. `bf16` on recent GPUs (Ampere and newer) is faster and safe; `fp16` for "
        "older cards (with a loss scaler); `no` is full fp32 (CPU, debugging).",
    )
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in the backward pass: much less memory, about 20-30% slower."
    )
    full_bf16: bool = Field(
        False,
        description="Keep the trained weights, and so their gradients, in bf16 instead of fp32 (kohya's "
        "`--full_bf16`, OneTrainer's bf16 train dtype): weights, gradients and optimizer state take about half "
        "the memory (an SDXL full fine-tune with `gradient_checkpointing`, `adamw8bit` and both caches fits a "
        "24 GB card). Needs `mixed_precision: bf16` and `method: full`. bf16 keeps 8 significant bits, so an "
        "update below half a bf16 step of a weight would round away; `stochastic_rounding` (on by default) "
        "keeps the average update exact. An EMA (`ema_decay`) stays fp32; exports are written in the dtype "
        "asked for.",
    )
    stochastic_rounding: bool = Field(
        True,
        description="With `full_bf16`: round each weight update to bf16 stochastically (edlib's AdamW/AdamW8bit, "
        "`edlib.model.sr_optim`), so updates below bf16's resolution still move the weights by the right "
        "amount on average. With nearest rounding, AdamW at lr 1e-6 moves under 1% of typical SD weights and "
        "about 1% of the total it should (docs/methods.md). Needs `optimizer: adamw` or `adamw8bit`. "
        "false: nearest rounding (e.g. with adafactor).",
    )
    attention: Literal["sdpa", "xformers"] = Field(
        "sdpa", description="Attention kernel: `sdpa` (PyTorch's fused attention) or `xformers` (must be installed)."
    )
    cache_latents: Literal["no", "memory", "disk"] = Field(
        "no",
        description="Encode each image with the VAE once and reuse the latents: `memory`, `disk` (in the "
        "run folder, reused on resume) or `no`. On a GPU the VAE then waits in CPU memory, brought to the GPU "
        "only to encode an image not yet cached (the first epoch) and for sampling and validation.",
    )
    cache_text_embeddings: bool = Field(
        False,
        description="Encode each caption once and reuse it. Only with a frozen text encoder "
        "(`text_encoder_lr: 0`) and fixed captions (no `shuffle_caption`). On a GPU the text encoder(s) then "
        "wait in CPU memory, as the VAE does with `cache_latents`.",
    )
    decode_workers: int | None = Field(
        None,
        ge=0,
        description="Processes that decode images ahead of the steps that need them (every step without "
        "`cache_latents`, the first epoch with it). Null: up to 4 on a GPU machine (one CPU core left for "
        "training), 0 on a CPU, where decoding in the training process costs the same.",
    )
    compile: bool = Field(
        False, description="Compile the UNet with torch.compile (faster steps after a slow first one)."
    )
    channels_last: bool = Field(
        False,
        description="Keep the UNet's weights and its input latents in channels_last memory format, which "
        "GPU convolution kernels run faster on (bf16/fp16 on Ampere and newer). Same results; no gain on a CPU.",
    )

    # --- saving, logging, sampling ----------------------------------------------------------
    save_every_n_steps: int | None = Field(
        None, ge=1, description="Save a checkpoint every N optimizer steps. Null: off."
    )
    save_every_n_epochs: int | None = Field(1, ge=1, description="Save a checkpoint every N epochs. Null: off.")
    save_every_n_minutes: float | None = Field(
        30.0,
        gt=0.0,
        description="Save a checkpoint every N minutes of training, so a vanished GPU loses little. Null: off.",
    )
    keep_last_n_checkpoints: int | None = Field(
        2, ge=1, description="Delete older checkpoints, keeping the newest N. Null keeps all."
    )
    log_every_n_steps: int = Field(
        10,
        ge=1,
        description="Write a progress line to log.txt and the console every N optimizer steps. Steps' losses "
        "are read back from the GPU only then, so metrics.jsonl (a line per step) and the live chart update once "
        "per N steps, and a run whose loss keeps being NaN stops at the next such step.",
    )
    tensorboard: bool = Field(
        False, description="Also write TensorBoard logs to the run folder (needs tensorboard installed)."
    )
    sample_prompts: Path | list[str] | None = Field(
        None,
        description="Prompts for sample images during training: a prompt file or a list of prompts. Null: no samples.",
    )
    sample_every_n_steps: int | None = Field(
        None, ge=1, description="Generate samples every N optimizer steps. Null: off."
    )
    sample_every_n_epochs: int | None = Field(None, ge=1, description="Generate samples every N epochs. Null: off.")
    sample_every_n_minutes: float | None = Field(
        None, gt=0.0, description="Generate samples every N minutes. Null: off."
    )
    sample_at_end: bool = Field(
        True,
        description="Generate samples when training ends (with `sample_prompts` set). A run stopped by a stop "
        "request skips them (draw them later with `edlib sample RUN --prompts FILE` or notebook 04).",
    )
    export_formats: list[str] | None = Field(
        None,
        description="Exports written to the run's exports/ when training ends (also after a stop request), from "
        "the final weights (EMA weights when `ema_decay` is set). Null: the method's usual format: `single-file` "
        "for full (`diffusers` for SD3/FLUX), `kohya-lora` for lora (`peft-lora`, diffusers' layout, for SD3), "
        "`a1111-embedding` for textual_inversion, `a1111-hypernetwork` for hypernetwork. A full fine-tune may also "
        "list `diffusers`, a LoRA `peft-lora` (SD3/FLUX). []: none (`edlib export RUN` exports any checkpoint later).",
    )
    export_dtype: Literal["fp16", "fp32"] = Field(
        "fp16", description="Weight dtype of the exports written at the end of a run."
    )
    loss_tracking: bool = Field(
        True,
        description="Track each image's timestep-normalised loss and write image_loss.csv "
        "(see docs/loss_tracking.md and `edlib review`).",
    )
    hard_example_boost: float = Field(
        0.0,
        ge=-1.0,
        le=1.0,
        description="Sample images the loss tracker flags (1 + this) times as often from the next epoch on "
        "(1: twice as often; negative: less often, -1: not at all). 0: off. Needs loss_tracking.",
    )
    validation_fraction: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="Hold out this fraction of each folder's images (chosen by seed) for the validation loss. 0: none.",
    )
    validation_data_root: Path | None = Field(
        None, description="A separate folder of validation images (instead of `validation_fraction`)."
    )
    validate_every_n_steps: int | None = Field(
        None, ge=1, description="Compute the validation loss every N optimizer steps. Null: off."
    )
    validate_every_n_epochs: int | None = Field(
        1, ge=1, description="Compute the validation loss every N epochs (when a validation set is configured)."
    )

    @model_validator(mode="before")
    @classmethod
    def _native_resolution(cls, values: Any) -> Any:
        """An unset resolution is the model's native one, so an SDXL model trains at 1024
        without being told (and its buckets are SDXL's), an SD1.5 one at 512."""
        if isinstance(values, dict) and values.get("resolution") is None and isinstance(values.get("model"), str):
            values = {**values, "resolution": resolution_for(values["model"])}
        return values

    @field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, value: Any, info) -> Any:
        """YAML reads `batch_size: true` as a boolean, which pydantic would take as 1."""
        if isinstance(value, bool) and is_number(cls.model_fields[info.field_name].annotation):
            raise ValueError("expected a number, not true/false")
        return value

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(METHODS)}")
        return value

    @field_validator("mixed_precision", "cache_latents", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        # YAML 1.1 reads a bare `no` as false; `mixed_precision: no` must still mean "no".
        return "no" if value is False else value

    @field_validator("data_root", "run_dir", "init_from", "validation_data_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Stored absolute, so the run's config.yaml and checkpoints mean the same folders
        # whatever the working folder of a later resume, sample or export.
        return value.expanduser().absolute() if value is not None else None

    @field_validator("resolution")
    @classmethod
    def _multiple_of_64(cls, value: int) -> int:
        problem = resolution_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        if problem := key_conflicts(self):
            raise ValueError(problem)
        if problem := config_problems(self):
            raise ValueError(problem)
        allowed = EXPORT_FORMATS[self.method]
        wrong = [f for f in self.export_formats or () if f not in allowed]
        if wrong:
            raise ValueError(
                f"export_formats: a {self.method!r} run exports as {', '.join(allowed)}, not {', '.join(map(repr, wrong))}"
            )
        if self.full_bf16 and self.stochastic_rounding and self.optimizer not in STOCHASTIC_ROUNDING_OPTIMIZERS:
            raise ValueError(
                f"stochastic_rounding: with full_bf16 it needs optimizer adamw or adamw8bit (edlib's), not "
                f"{self.optimizer!r}; change the optimizer, or set stochastic_rounding: false (small updates then "
                "round away)"
            )
        return self

    def is_logging_step(self, step: int) -> bool:
        """Whether optimizer step `step` logs: the steps on which the loop reads losses back,
        writes metrics and a progress line, and the loss tracker takes its window."""
        return step % self.log_every_n_steps == 0

    def exports_at_end(self, family: str | None = None) -> tuple[str, ...]:
        """The formats exported when the run ends (see `export_formats`), for a model of
        `family` (`edlib.model.identify.FAMILIES`; None: as for SD)."""
        if self.export_formats is None:
            return (FAMILY_END_EXPORT_FORMATS.get((family, self.method), END_EXPORT_FORMATS[self.method]),)
        return tuple(dict.fromkeys(self.export_formats))

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """Validate a plain mapping, raising one `ConfigError` that names every bad key."""
        try:
            return cls.model_validate(values)
        except ValidationError as error:
            raise ConfigError(describe_error(error, list(cls.model_fields))) from None

    def model_dump(self, **kwargs) -> dict[str, Any]:
        """As pydantic's, with the inherited keys (which pydantic lists first) last, so a run's
        config.yaml reads in this class's order."""
        values = super().model_dump(**kwargs)
        inherited = set(FamilyKeys.model_fields) | set(HypernetworkKeys.model_fields)
        return {**{k: v for k, v in values.items() if k not in inherited}, **{k: v for k, v in values.items() if k in inherited}}

    def to_yaml(self) -> str:
        """The config as YAML, every key written out, in declaration order."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False, allow_unicode=True)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_yaml(), encoding="utf-8")
        return path

