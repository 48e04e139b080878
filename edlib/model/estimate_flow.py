"""Memory and time estimates for SD3.5 and FLUX.1 configs (`edlib.model.estimate` asks here).

Parameter counts are those of the published architectures (diffusers configs of
FLUX.1-dev, SD3.5 Large and SD3.5 Medium, and T5-XXL's encoder), counted on the meta device;
tests/model/test_estimate_flow.py counts them again. Nothing here is measured on a GPU yet:

- **Activations** per 1024 x 1024 image in bf16 are derived from reported peaks, FLUX.1 LoRA
  at batch 1 with gradient checkpointing and cached text embeddings: about 16 GB with fp8 base
  weights (sd-scripts docs/flux_train_network.md) and about 26 GB with bf16 ones (HF's
  flux-qlora blog), which leave about 3 GiB beside weights, adapters and the CUDA context;
  without checkpointing diffusers' README_flux reports over 40 GB, about 16 GiB of activations.
  SD3.5's are FLUX's scaled by width x depth of their blocks (Large 0.8, Medium 0.32).
- **Time** assumes 35% of the GPU's dense bf16 peak (model FLOPs utilisation) for the
  transformer's 2 x parameters x tokens FLOPs per forward pass: x3 for a full fine-tune
  (forward, input and weight gradients), x2 for LoRA (no weight gradients of the base), one
  more forward with gradient checkpointing; T5's forward is added when captions are not cached.

bench/flow_cases.py measures them; its numbers are to replace these.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
ASSUMED_MFU = 0.35


@dataclass(frozen=True)
class FlowFamily:
    name: str
    transformer_params: float
    blocks: tuple[float, ...]  # parameters of each transformer block, in the order they run
    clip_params: float  # the CLIP encoders together
    t5_params: float
    vae_params: float
    lora_params_per_rank: dict[str, float]  # sum of in + out features of each preset's layers
    activation_gib: float  # per 1024 x 1024 image, bf16
    activation_gib_checkpointed: float
    text_tokens: int  # the family's default T5 length (+ 77 CLIP tokens for SD3)
    patch: int  # pixels per image token along a side (VAE 8 x packing or patch 2)


_T5 = 4_762_310_656
_VAE = 83_819_683
FLOW_ESTIMATES = {
    "flux": FlowFamily(
        "FLUX.1", 11_901_408_320, (339_831_296,) * 19 + (141_591_808,) * 38, 123_060_480, _T5, _VAE,
        {"attention": 1_634_304, "attention_ff": 4_085_760, "all_linear": 5_369_856}, 16.0, 3.0, 512, 16,
    ),
    "sd35l": FlowFamily(
        "SD3.5 Large", 8_056_627_520, (212_999_680,) * 37 + (136_085_248,), 123_650_304 + 694_659_840, _T5, _VAE,
        {"attention": 1_473_792, "attention_ff": 3_297_792, "all_linear": 4_581_888}, 12.8, 2.4, 77 + 256, 16,
    ),
    "sd35m": FlowFamily(
        "SD3.5 Medium", 2_243_171_520, (101_506_944,) * 13 + (84_980_992,) * 10 + (54_294_784,), 123_650_304 + 694_659_840,
        _T5, _VAE, {"attention": 746_496, "attention_ff": 1_468_416, "all_linear": 2_038_272}, 5.1, 1.0, 77 + 256, 16,
    ),
}
DEFAULT_TARGETS = {"flux": "attention_ff", "sd35l": "attention", "sd35m": "attention"}


def flow_memory_parts(config, key: str, state_bytes: float) -> dict[str, float]:
    """GiB per part of one GPU training ``config`` on family ``key`` (see the module docstring);
    ``state_bytes``: weights + gradients + optimizer state per trained parameter."""
    fam = FLOW_ESTIMATES[key]
    precision_bytes = 4 if config.mixed_precision == "no" else 2
    swapped = sum(fam.blocks[-config.blocks_to_swap :]) if config.blocks_to_swap else 0.0
    if config.method == "full":
        trained, frozen_transformer = fam.transformer_params, 0.0
    else:
        targets = config.lora_targets or DEFAULT_TARGETS[key]
        trained = config.network_dim * fam.lora_params_per_rank[targets]
        frozen_transformer = (fam.transformer_params - swapped) * (1 if config.fp8_base else precision_bytes)
    frozen = 0.0
    if config.text_encoder_lr > 0:
        trained += fam.clip_params  # a full fine-tune's; a LoRA's adapters on CLIP are small
    if not config.cache_text_embeddings:
        frozen += fam.t5_params + (0 if config.text_encoder_lr > 0 else fam.clip_params)
    if config.cache_latents == "no":
        frozen += fam.vae_params
    per_image = fam.activation_gib_checkpointed if config.gradient_checkpointing else fam.activation_gib
    activations = per_image * (config.resolution / 1024) ** 2 * config.batch_size * precision_bytes / 2
    parts = {
        "trained weights, gradients, optimizer": trained * state_bytes / GIB,
        "frozen transformer": frozen_transformer / GIB,
        "frozen encoders and VAE": frozen * precision_bytes / GIB,
        "activations": activations,
        "CUDA context": 1.0,
    }
    if swapped:
        parts["frozen transformer"] = frozen_transformer / GIB  # the swapped blocks wait in CPU memory
    return parts


def flow_images_per_s(config, key: str, peak_tflops: float) -> tuple[float, str]:
    """Images per second at ``ASSUMED_MFU`` of ``peak_tflops``, and how it was reckoned."""
    fam = FLOW_ESTIMATES[key]
    tokens = (config.resolution // fam.patch) ** 2 + (config.max_sequence_length or fam.text_tokens)
    passes = 3 if config.method == "full" else 2
    passes += 1 if config.gradient_checkpointing else 0
    flops = 2 * fam.transformer_params * tokens * passes
    if not config.cache_text_embeddings:
        flops += 2 * fam.t5_params * (config.max_sequence_length or fam.text_tokens)
    rate = ASSUMED_MFU * peak_tflops * 1e12 / flops
    if config.mixed_precision == "no":
        rate *= 0.5
    basis = (
        f"estimate, not measured: {flops / 1e12:.0f} TFLOP per image ({fam.name} transformer, {tokens} tokens, "
        f"{passes} passes) at {ASSUMED_MFU:.0%} of the GPU's bf16 peak"
    )
    return rate, basis
