"""The outputs an export must reproduce: what each component computes on fixed inputs."""

import torch
from diffusers import StableDiffusionPipeline


@torch.no_grad()
def component_outputs(pipe: StableDiffusionPipeline) -> dict[str, torch.Tensor]:
    """What each exported component computes on fixed inputs, in float32: the UNet's noise
    prediction, the VAE's latent mean and reconstruction, the text encoder's hidden states."""
    generator = torch.Generator().manual_seed(1234)
    image = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    prompt = ["a photo of a red cat"]
    ids = pipe.tokenizer(prompt, padding="max_length", max_length=77, return_tensors="pt").input_ids

    dtype = pipe.unet.dtype
    text = pipe.text_encoder(ids).last_hidden_state
    return {
        "text_encoder": text.float(),
        "unet": pipe.unet(latents.to(dtype), 500, encoder_hidden_states=text).sample.float(),
        "vae_encode": pipe.vae.encode(image.to(dtype)).latent_dist.mean.float(),
        "vae_decode": pipe.vae.decode(latents.to(dtype)).sample.float(),
    }


def assert_same_outputs(expected: dict, actual: dict, *, rtol: float) -> None:
    """Every output matches within ``rtol`` of its own scale (max |x|)."""
    for name, want in expected.items():
        error = (actual[name] - want).abs().max().item()
        scale = want.abs().max().item()
        assert error <= rtol * scale, f"{name}: max error {error:.3g} exceeds {rtol:g} x scale {scale:.3g}"
