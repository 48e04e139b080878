"""Memory and time estimates for SD3.5 and FLUX.1: the parameter counts are those of the
published architectures (counted again here on the meta device), the memory savers change the
estimate by what they save, and the documented presets fit the cards they are for."""

import pytest
import torch

from edlib.model import architectures as arch
from edlib.model.config import TrainConfig
from edlib.model.estimate import estimate_memory, model_family, throughput
from edlib.model.estimate_flow import FLOW_ESTIMATES
from edlib.model.methods.lora_targets import transformer_lora_layers

# The diffusers configs of the released models (edlib.model.architectures).
CONFIGS = {
    "flux": ("FluxTransformer2DModel", arch.FLUX1_DEV_TRANSFORMER),
    "sd35l": ("SD3Transformer2DModel", arch.SD35_LARGE_TRANSFORMER),
    "sd35m": ("SD3Transformer2DModel", arch.SD35_MEDIUM_TRANSFORMER),
}


@pytest.mark.parametrize("key", sorted(CONFIGS))
def test_parameter_counts_are_the_published_architectures(key):
    import diffusers

    name, config = CONFIGS[key]
    with torch.device("meta"):
        model = getattr(diffusers, name)(**config)
    fam = FLOW_ESTIMATES[key]
    assert sum(p.numel() for p in model.parameters()) == fam.transformer_params
    blocks = list(model.transformer_blocks) + list(getattr(model, "single_transformer_blocks", []))
    assert tuple(sum(p.numel() for p in b.parameters()) for b in blocks) == fam.blocks
    modules = dict(model.named_modules())
    for preset, per_rank in fam.lora_params_per_rank.items():
        assert sum(modules[n].in_features + modules[n].out_features for n in transformer_lora_layers(model, preset)) == per_rank


def test_t5_xxl_encoder_and_vae_counts():
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    with torch.device("meta"):
        t5 = T5EncoderModel(T5Config(**arch.T5_XXL_ENCODER))
        vae = AutoencoderKL(**arch.FLUX_VAE)
    assert sum(p.numel() for p in t5.parameters()) == FLOW_ESTIMATES["flux"].t5_params
    assert sum(p.numel() for p in vae.parameters()) == FLOW_ESTIMATES["flux"].vae_params


def _config(model="black-forest-labs/FLUX.1-dev", **extra):
    values = dict(
        model=model, data_root="d", resolution=1024, method="lora", mixed_precision="bf16", gradient_checkpointing=True,
        cache_latents="disk", cache_text_embeddings=True, batch_size=1, network_dim=16, unet_lr=1e-4, optimizer="adamw8bit",
    )
    return TrainConfig.from_dict({**values, **extra})


def test_the_family_is_told_for_local_folders_and_hub_names(tiny_flux, tiny_sd3):
    assert model_family(str(tiny_flux)) == "flux" and model_family(str(tiny_sd3)) == "sd35m"  # 2 layers: Medium-like
    assert model_family("black-forest-labs/FLUX.1-schnell") == "flux"
    assert model_family("stabilityai/stable-diffusion-3.5-large") == "sd35l"
    assert model_family("stabilityai/stable-diffusion-3.5-medium") == "sd35m"


def test_memory_savers_save_what_they_hold():
    bf16 = estimate_memory(_config()).parts
    fp8 = estimate_memory(_config(fp8_base=True)).parts
    assert fp8["frozen transformer"] == pytest.approx(bf16["frozen transformer"] / 2)
    swapped = estimate_memory(_config(blocks_to_swap=10)).parts
    assert bf16["frozen transformer"] - swapped["frozen transformer"] == pytest.approx(10 * 141_591_808 * 2 / 1024**3)
    uncached = estimate_memory(_config(cache_text_embeddings=False)).parts
    assert uncached["frozen encoders and VAE"] - bf16["frozen encoders and VAE"] == pytest.approx(
        (4_762_310_656 + 123_060_480) * 2 / 1024**3
    )
    assert estimate_memory(_config(gradient_checkpointing=False)).parts["activations"] > 5 * bf16["activations"]


@pytest.mark.parametrize(
    ("card", "model", "extra"),
    [
        ("RTX 4090 24GB", "black-forest-labs/FLUX.1-dev", {"fp8_base": True}),  # docs/methods.md FLUX 24 GB
        ("T4 16GB", "black-forest-labs/FLUX.1-dev", {"fp8_base": True, "resolution": 768}),  # FLUX 16 GB
        ("RTX 4090 24GB", "stabilityai/stable-diffusion-3.5-large", {}),  # SD3.5 Large 24 GB
        ("T4 16GB", "stabilityai/stable-diffusion-3.5-large", {"fp8_base": True}),  # SD3.5 Large 16 GB
    ],
)
def test_the_documented_presets_fit_their_cards(card, model, extra):
    assert estimate_memory(_config(model, **extra)).fits(card)


def test_flux_in_bf16_does_not_fit_24_gb_and_time_is_labelled_an_estimate():
    assert not estimate_memory(_config()).fits("RTX 4090 24GB")
    speed = throughput(_config(), "H100 80GB")
    assert not speed.measured and "not measured" in speed.basis
    assert throughput(_config(method="full", unet_lr=1e-5), "H100 80GB").images_per_s < speed.images_per_s
