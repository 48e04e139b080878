"""SD3/SD3.5 and FLUX.1 on the model layer: the family told from folders and file headers,
loading into the `Models` bundle, the text conditioning and the transformer's prediction.
Reference values come from diffusers' own FluxPipeline and StableDiffusion3Pipeline (and the
steps of its train_dreambooth_lora_flux.py) wherever they have them."""

import json

import pytest
import torch
from safetensors.torch import save_file

from edlib.model.config import TrainConfig
from edlib.model.flow import image_ids, pack_latents, predict_velocity, unpack_latents
from edlib.model.identify import file_family, folder_family, index_family, model_family, native_resolution
from edlib.model.methods.lora_targets import transformer_lora_layers
from edlib.model.models import encode_images, encode_prompts, load_models


def test_the_family_is_told_from_model_index_and_file_headers(tiny_flux, tiny_sd3, tiny_sdxl, tiny_sd1, tmp_path):
    assert (folder_family(tiny_flux), folder_family(tiny_sd3), folder_family(tiny_sdxl), folder_family(tiny_sd1)) == (
        "flux", "sd3", "sdxl", "sd",
    )
    # A FLUX folder has a text_encoder_2 too: it is not mistaken for SDXL.
    assert "text_encoder_2" in json.loads((tiny_flux / "model_index.json").read_text())
    assert index_family({"transformer": [], "text_encoder_2": [], "text_encoder_3": []}) == "sd3"
    # Single files by their keys, with or without ComfyUI's prefix.
    for name, key, family in (
        ("flux.safetensors", "double_blocks.0.img_attn.norm.key_norm.scale", "flux"),
        ("comfy-flux.safetensors", "model.diffusion_model.double_blocks.0.img_attn.qkv.weight", "flux"),
        ("sd35.safetensors", "model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight", "sd3"),
        ("xl.safetensors", "conditioner.embedders.1.model.ln_final.weight", "sdxl"),
        ("sd.safetensors", "model.diffusion_model.input_blocks.0.0.weight", "sd"),
    ):
        save_file({key: torch.zeros(2)}, str(tmp_path / name))
        assert file_family(tmp_path / name) == family and model_family(tmp_path / name) == family
    assert native_resolution(tmp_path / "flux.safetensors") == 1024
    # Folders: the transformer's sample size x the VAE's factor; FLUX's pipeline default (128).
    assert native_resolution(tiny_sd3) == 64 and native_resolution(tiny_flux) == 128 * 4
    assert model_family("nobody/not-cached") is None


def test_a_flux_folder_loads_with_clip_t5_and_its_vae_factors(tiny_flux):
    models = load_models(tiny_flux)
    assert models.family == "flux" and models.flow_matching and not models.is_sdxl
    assert models.text_encoder_names == ("text_encoder", "text_encoder_2")
    assert models.trainable_text_encoder_names == ("text_encoder",)  # T5 stays frozen
    assert type(models.unet).__name__ == "FluxTransformer2DModel" and type(models.text_encoder_2).__name__ == "T5EncoderModel"
    assert models.vae_scaling_factor == pytest.approx(0.3611) and models.vae_shift_factor == pytest.approx(0.1159)
    assert models.prediction_type == "flow" and type(models.noise_scheduler).__name__ == "FlowMatchEulerDiscreteScheduler"
    assert models.max_sequence_length == 512  # dev: its guidance embedder says so
    assert load_models(tiny_flux, max_sequence_length=32).max_sequence_length == 32


def test_sd3_and_schnell_default_to_256_t5_tokens(tiny_sd3, tmp_path):
    from edlib.model.tiny import build_tiny_pipeline

    sd3 = load_models(tiny_sd3)
    assert sd3.family == "sd3" and sd3.text_encoder_names == ("text_encoder", "text_encoder_2", "text_encoder_3")
    assert sd3.trainable_text_encoder_names == ("text_encoder", "text_encoder_2")
    assert sd3.max_sequence_length == 256 and sd3.vae_shift_factor == pytest.approx(0.0609)
    schnell = load_models(build_tiny_pipeline(tmp_path / "schnell", variant="flux-schnell"))
    assert not schnell.unet.config.guidance_embeds and schnell.max_sequence_length == 256


def test_flux_prompt_encoding_matches_the_pipeline(tiny_flux):
    from diffusers import FluxPipeline

    models = load_models(tiny_flux, max_sequence_length=24)
    pipeline = FluxPipeline.from_pretrained(tiny_flux)
    captions = ["a photo of a red cat", "zorblat, blue sky"]
    with torch.no_grad():
        cond = encode_prompts(models, captions)
        hidden, pooled, text_ids = pipeline.encode_prompt(captions, captions, max_sequence_length=24)
    assert cond.hidden.shape == (2, 24, 48) and cond.pooled.shape == (2, 16)
    torch.testing.assert_close(cond.hidden, hidden)
    torch.testing.assert_close(cond.pooled, pooled)
    with pytest.raises(ValueError, match="clip_skip"):
        encode_prompts(models, captions, clip_skip=2)


@pytest.mark.parametrize("clip_skip", [1, 2])
def test_sd3_prompt_encoding_matches_the_pipeline(tiny_sd3, clip_skip):
    from diffusers import StableDiffusion3Pipeline

    models = load_models(tiny_sd3, max_sequence_length=20)
    pipeline = StableDiffusion3Pipeline.from_pretrained(tiny_sd3)
    captions = ["a photo of a red cat", "a blue car"]
    with torch.no_grad():
        cond = encode_prompts(models, captions, clip_skip=clip_skip)
        # diffusers counts layers skipped beyond the standard one: ours minus one.
        hidden, _, pooled, _ = pipeline.encode_prompt(
            captions, None, None, do_classifier_free_guidance=False, max_sequence_length=20,
            clip_skip=None if clip_skip == 1 else clip_skip - 1,
        )
    # CLIP-L (16) and CLIP-G (24) joined and padded to T5's 48, 77 CLIP tokens then 20 T5 tokens.
    assert cond.hidden.shape == (2, 77 + 20, 48) and cond.pooled.shape == (2, 16 + 24)
    torch.testing.assert_close(cond.hidden, hidden)
    torch.testing.assert_close(cond.pooled, pooled)


def test_packing_and_ids_are_the_pipelines():
    from diffusers import FluxPipeline

    latents = torch.randn(2, 4, 6, 10, generator=torch.Generator().manual_seed(0))
    packed = pack_latents(latents)
    torch.testing.assert_close(packed, FluxPipeline._pack_latents(latents, 2, 4, 6, 10))
    torch.testing.assert_close(unpack_latents(packed, 6, 10), latents)
    torch.testing.assert_close(image_ids(6, 10), FluxPipeline._prepare_latent_image_ids(2, 3, 5, "cpu", torch.float32))
    with pytest.raises(ValueError, match="even"):
        pack_latents(torch.zeros(1, 4, 5, 6))


def test_flux_velocity_is_the_training_scripts_transformer_call(tiny_flux):
    """The step of diffusers' train_dreambooth_lora_flux.py as written: pack, image and text
    ids, timestep / 1000 (it passes sigma), guidance, unpack."""
    from diffusers import FluxPipeline

    models = load_models(tiny_flux, max_sequence_length=8)
    generator = torch.Generator().manual_seed(1)
    noisy = torch.randn(2, 4, 8, 8, generator=generator)
    sigmas = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        cond = encode_prompts(models, ["a red cat", "a dog"])
        ours = predict_velocity(models, noisy, sigmas, cond, guidance=1.0)
        reference = models.unet(
            hidden_states=FluxPipeline._pack_latents(noisy, 2, 4, 8, 8),
            timestep=(sigmas * 1000) / 1000,
            guidance=torch.tensor([1.0]).expand(2),
            pooled_projections=cond.pooled,
            encoder_hidden_states=cond.hidden,
            txt_ids=torch.zeros(8, 3),
            img_ids=FluxPipeline._prepare_latent_image_ids(2, 4, 4, "cpu", torch.float32),
            return_dict=False,
        )[0]
        other_guidance = predict_velocity(models, noisy, sigmas, cond, guidance=3.5)
    torch.testing.assert_close(ours, FluxPipeline._unpack_latents(reference, 32, 32, 4))
    assert not torch.allclose(ours, other_guidance)  # dev hears its guidance value
    with pytest.raises(ValueError, match="guidance"):
        predict_velocity(models, noisy, sigmas, cond, guidance=None)


def test_sd3_velocity_takes_timesteps_in_thousandths(tiny_sd3):
    models = load_models(tiny_sd3, max_sequence_length=8)
    noisy = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = encode_prompts(models, ["a red cat"])
        ours = predict_velocity(models, noisy, torch.tensor([0.25]), cond)
        reference = models.unet(noisy, cond.hidden, cond.pooled, torch.tensor([250.0]), return_dict=False)[0]
    torch.testing.assert_close(ours, reference)


def test_latents_are_shifted_then_scaled(tiny_flux):
    models = load_models(tiny_flux)
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        mean = models.vae.encode(pixels).latent_dist.mean
    torch.testing.assert_close(encode_images(models, pixels), (mean - 0.1159) * 0.3611)


def test_lora_target_presets_pick_the_layers_they_name(tiny_flux, tiny_sd3):
    flux = load_models(tiny_flux).unet
    attention = transformer_lora_layers(flux, "attention")
    with_ff = transformer_lora_layers(flux, "attention_ff")
    everything = transformer_lora_layers(flux, "all_linear")
    assert "transformer_blocks.0.attn.add_q_proj" in attention and "single_transformer_blocks.1.attn.to_v" in attention
    assert not any(".ff." in name or "proj_mlp" in name for name in attention)
    assert set(attention) < set(with_ff) < set(everything)
    assert {"transformer_blocks.0.ff.net.2", "transformer_blocks.0.ff_context.net.0.proj", "single_transformer_blocks.0.proj_mlp"} <= set(with_ff)
    assert {"transformer_blocks.0.norm1.linear", "single_transformer_blocks.0.norm.linear"} <= set(everything) - set(with_ff)
    assert not {"x_embedder", "norm_out.linear", "proj_out"} & set(everything)  # the blocks only, as sd-scripts
    sd3 = transformer_lora_layers(load_models(tiny_sd3).unet, "attention")
    assert "transformer_blocks.0.attn2.to_q" in sd3  # SD3.5's second attention
    with pytest.raises(ValueError, match="lora_targets"):
        transformer_lora_layers(flux, "everything")


def test_the_config_refuses_what_a_family_cannot_do(tiny_flux, tiny_sd3, tiny_sd1):
    base = {"data_root": "d"}
    for model, extra, message in (
        (tiny_flux, {"min_snr_gamma": 5.0}, "min_snr_gamma"),
        (tiny_flux, {"prediction_type": "epsilon"}, "prediction_type"),
        (tiny_flux, {"clip_skip": 2}, "clip_skip"),
        (tiny_flux, {"text_encoder_2_lr": 1e-5}, "T5"),
        (tiny_sd3, {"method": "textual_inversion", "text_encoder_lr": 1e-3, "placeholder_tokens": [{"token": "<x>", "init_word": "cat"}]}, "textual_inversion"),
        (tiny_sd3, {"method": "lora", "conv_dim": 4}, "conv_dim"),
        (tiny_sd1, {"timestep_sampling": "uniform"}, "SD3/FLUX models only"),
        (tiny_sd1, {"method": "lora", "blocks_to_swap": 2, "gradient_checkpointing": True}, "SD3/FLUX models only"),
        (tiny_flux, {"method": "full", "blocks_to_swap": 2, "gradient_checkpointing": True}, "full fine-tune"),
        (tiny_flux, {"method": "lora", "fp8_base": True}, "mixed_precision"),
    ):
        with pytest.raises(ValueError, match=message):
            TrainConfig.from_dict({**base, "model": str(model), **extra})
    # SD3 trains both CLIP encoders: text_encoder_2_lr is its CLIP-G's rate.
    assert TrainConfig.from_dict({**base, "model": str(tiny_sd3), "text_encoder_2_lr": 1e-5}).text_encoder_2_lr == 1e-5


def test_an_sd3_single_file_loads_its_transformer_with_the_rest_from_a_folder(tiny_sd3, tmp_path):
    """Stability's SD3.5 files hold no text encoders: the transformer comes from the file
    (through diffusers' single-file converter), the rest from a folder of the same model."""
    from edlib.sample.pipeline import load_pipeline
    from tests.model.sd3_file import original_sd3_state_dict

    folder = load_models(tiny_sd3)
    path = tmp_path / "sd35-tiny.safetensors"
    save_file(original_sd3_state_dict(folder.unet), str(path))
    assert file_family(path) == "sd3"
    single = load_models(path, single_file_config=str(tiny_sd3))
    assert single.family == "sd3" and single.text_encoder_3 is not None
    expected = folder.unet.state_dict()
    for key, value in single.unet.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert type(load_pipeline(path, config=tiny_sd3)).__name__ == "StableDiffusion3Pipeline"


def test_a_flux_single_file_without_its_configs_offline_names_what_to_give(tmp_path):
    from edlib.model.models import ModelError

    path = tmp_path / "flux1-dev.safetensors"
    save_file({"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(2), "guidance_in.in_layer.weight": torch.zeros(2)}, str(path))
    with pytest.raises(ModelError, match="black-forest-labs/FLUX.1-dev.*diffusers folder of the same model"):
        load_models(path)
