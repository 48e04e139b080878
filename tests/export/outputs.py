"""The outputs an export must reproduce: what each component computes on fixed inputs."""

import torch
from diffusers import DiffusionPipeline

PROMPT = ["a photo of a red cat"]


def _ids(tokenizer) -> torch.Tensor:
    return tokenizer(PROMPT, padding="max_length", max_length=77, return_tensors="pt").input_ids


@torch.no_grad()
def component_outputs(pipe: DiffusionPipeline) -> dict[str, torch.Tensor]:
    """What each exported component computes on fixed inputs, in float32: the UNet's noise
    prediction, the VAE's latent mean and reconstruction, the text encoder's hidden states;
    for SDXL both encoders' (and the second one's projected pooled output), and the UNet
    conditioned on their penultimate layers, the pooled output and micro-conditioning, as
    SDXL's pipeline does."""
    generator = torch.Generator().manual_seed(1234)
    image = torch.rand(1, 3, 32, 32, generator=generator) * 2 - 1
    latents = torch.randn(1, 4, 8, 8, generator=generator)

    dtype = pipe.unet.dtype
    outputs = {
        "vae_encode": pipe.vae.encode(image.to(dtype)).latent_dist.mean.float(),
        "vae_decode": pipe.vae.decode(latents.to(dtype)).sample.float(),
    }
    first = pipe.text_encoder(_ids(pipe.tokenizer), output_hidden_states=True)
    outputs["text_encoder"] = first.last_hidden_state.float()
    if getattr(pipe, "text_encoder_2", None) is None:
        outputs["unet"] = pipe.unet(latents.to(dtype), 500, encoder_hidden_states=first.last_hidden_state).sample.float()
        return outputs

    second = pipe.text_encoder_2(_ids(pipe.tokenizer_2), output_hidden_states=True)
    outputs["text_encoder_2"] = second.last_hidden_state.float()
    outputs["text_encoder_2_pooled"] = second.text_embeds.float()
    hidden = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    added = {"text_embeds": second.text_embeds, "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]], dtype=dtype)}
    unet = pipe.unet(latents.to(dtype), 500, encoder_hidden_states=hidden, added_cond_kwargs=added)
    outputs["unet"] = unet.sample.float()
    return outputs


def assert_same_outputs(expected: dict, actual: dict, *, rtol: float) -> None:
    """Every output matches within ``rtol`` of its own scale (max |x|)."""
    assert expected.keys() == actual.keys()
    for name, want in expected.items():
        error = (actual[name] - want).abs().max().item()
        scale = want.abs().max().item()
        assert error <= rtol * scale, f"{name}: max error {error:.3g} exceeds {rtol:g} x scale {scale:.3g}"
