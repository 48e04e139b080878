"""load_models and the encoders, on tiny models written to disk like real ones."""

import copy
import importlib.util
import json

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import save_file

from edlib.model.models import (
    ModelError,
    enable_gradient_checkpointing,
    encode_images,
    encode_prompts,
    load_models,
)


def test_loads_sd1_folder_with_epsilon_and_config_driven_factors(tiny_sd1):
    models = load_models(str(tiny_sd1))
    assert models.prediction_type == "epsilon"
    assert isinstance(models.noise_scheduler, DDPMScheduler)
    # The training scheduler keeps the model's noise schedule (here PNDM's SD1.5 config).
    assert models.noise_scheduler.config.beta_schedule == "scaled_linear"
    assert models.noise_scheduler.config.beta_end == 0.012
    assert models.vae_scale_factor == 4 and models.vae_scaling_factor == pytest.approx(0.18215)
    assert models.source == str(tiny_sd1)
    processors = list(models.unet.attn_processors.values()) + list(models.vae.attn_processors.values())
    assert {type(p).__name__ for p in processors} == {"AttnProcessor2_0"}


def test_sd2v_prediction_type_comes_from_the_model_and_can_be_overridden(tiny_sd1, tiny_sd2v):
    assert load_models(tiny_sd2v).prediction_type == "v_prediction"
    models = load_models(tiny_sd1, prediction_type="v_prediction")
    assert models.prediction_type == models.noise_scheduler.config.prediction_type == "v_prediction"


def test_zero_terminal_snr_rescales_the_training_schedule(tiny_sd2v):
    plain = load_models(tiny_sd2v).noise_scheduler.alphas_cumprod
    rescaled = load_models(tiny_sd2v, zero_terminal_snr=True).noise_scheduler.alphas_cumprod
    assert plain[-1] > 0 and rescaled[-1] == 0


def test_a_model_shipped_with_a_zero_terminal_snr_schedule_trains_on_it(tmp_path):
    # Its samplers start from pure noise at the last timestep; training it on the plain
    # schedule (the config default zero_terminal_snr: false) would teach it to expect
    # some of the image still there.
    from edlib.model.tiny import build_tiny_pipeline

    path = build_tiny_pipeline(tmp_path / "m", variant="sd2-v")
    config_file = path / "scheduler" / "scheduler_config.json"
    config = json.loads(config_file.read_text())
    config.update(rescale_betas_zero_snr=True, timestep_spacing="trailing")
    config_file.write_text(json.dumps(config))
    assert load_models(path).noise_scheduler.alphas_cumprod[-1] == 0


def test_dtype_applies_to_the_weights(tiny_sd1):
    models = load_models(tiny_sd1, dtype=torch.bfloat16)
    assert models.unet.dtype == models.vae.dtype == models.text_encoder.dtype == torch.bfloat16


def test_missing_and_wrong_paths_are_named(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        load_models(tmp_path / "nothing-here")
    with pytest.raises(ModelError, match="not a diffusers model \\(no model_index.json"):
        load_models(tmp_path)
    (tmp_path / "notes.txt").write_text("hello", encoding="utf-8")
    with pytest.raises(ModelError, match="notes.txt is not a model file"):
        load_models(tmp_path / "notes.txt")


def test_broken_single_file_is_named(tmp_path):
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(b"this is not a safetensors file")
    with pytest.raises(ModelError, match="could not load the single file .*model.safetensors"):
        load_models(broken)


def test_hub_id_offline_gives_a_clear_message():
    with pytest.raises(ModelError, match="could not load 'edlib-test/not-a-model' from the Hugging Face hub.*offline"):
        load_models("edlib-test/not-a-model")


def test_single_file_in_original_layout_loads_with_a_local_config(tiny_sd1, tmp_path):
    from edlib.export.sd_keys import clip_to_original, unet_to_original, vae_to_original

    reference = load_models(tiny_sd1)
    weights = {
        **unet_to_original(reference.unet.state_dict(), reference.unet.config),
        **vae_to_original(reference.vae.state_dict(), reference.vae.config),
        **clip_to_original(reference.text_encoder.state_dict()),
    }
    path = tmp_path / "tiny.safetensors"
    save_file({key: value.contiguous() for key, value in weights.items()}, path)
    loaded = load_models(path, single_file_config=str(tiny_sd1))
    for name in ("unet", "vae", "text_encoder"):
        expected, got = getattr(reference, name).state_dict(), getattr(loaded, name).state_dict()
        assert set(got) == set(expected), name
        assert all(torch.equal(got[key], expected[key]) for key in expected), name
    assert loaded.prediction_type == "epsilon" and loaded.vae_scale_factor == 4


@pytest.mark.skipif(importlib.util.find_spec("xformers") is not None, reason="xformers is installed here")
def test_xformers_missing_is_a_clear_error(tiny_sd1):
    with pytest.raises(ModelError, match="xformers is not installed"):
        load_models(tiny_sd1, attention="xformers")


def test_clip_skip_1_is_the_last_layer_and_2_the_penultimate(tiny_sd1):
    models = load_models(tiny_sd1)
    captions = ["a photo of a cat", "a red car"]
    with torch.no_grad():
        last = encode_prompts(models, captions, clip_skip=1).hidden
        penultimate = encode_prompts(models, captions, clip_skip=2).hidden
        # Reference for clip_skip 2: the same encoder with its last layer removed.
        shortened = copy.deepcopy(models.text_encoder)
        layers = getattr(shortened, "text_model", shortened).encoder.layers
        del layers[-1]
        ids = models.tokenizer(
            captions, padding="max_length", max_length=77, truncation=True, return_tensors="pt"
        ).input_ids
        expected = shortened(ids).last_hidden_state
    assert last.shape == (2, 77, 32)
    torch.testing.assert_close(penultimate, expected)
    assert not torch.allclose(last, penultimate)
    with pytest.raises(ValueError, match="clip_skip: 3 is out of range .* 2 layers"):
        encode_prompts(models, captions, clip_skip=3)


def test_prompt_encoding_keeps_gradients_for_a_training_text_encoder(tiny_sd1):
    models = load_models(tiny_sd1)
    encode_prompts(models, ["a cat"], clip_skip=2).hidden.square().mean().backward()
    assert models.text_encoder.get_input_embeddings().weight.grad.abs().sum() > 0


def test_encode_images_uses_the_mean_unless_given_a_generator(tiny_sd1):
    models = load_models(tiny_sd1)
    pixels = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0)) * 2 - 1
    latents = encode_images(models, pixels)
    assert latents.shape == (2, 4, 16, 24) and not latents.requires_grad
    with torch.no_grad():
        mean = models.vae.encode(pixels).latent_dist.mean
    torch.testing.assert_close(latents, mean * 0.18215)
    a = encode_images(models, pixels, torch.Generator().manual_seed(1))
    b = encode_images(models, pixels, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and not torch.equal(a, latents)


def test_gradient_checkpointing_gives_the_same_gradients(tiny_sd1):
    def unet_and_text_grads(models):
        models.unet.train()
        embeddings = encode_prompts(models, ["a cat"], clip_skip=1).hidden
        latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
        out = models.unet(latents, torch.tensor([500]), embeddings).sample
        out.square().mean().backward()
        return [p.grad.clone() for p in (*models.unet.parameters(), *models.text_encoder.parameters())]

    plain = unet_and_text_grads(load_models(tiny_sd1))
    models = load_models(tiny_sd1)
    enable_gradient_checkpointing(models, text_encoders=("text_encoder",))
    text_encoder = models.text_encoder
    assert models.unet.is_gradient_checkpointing
    assert getattr(text_encoder, "is_activation_checkpointing", None) or text_encoder.is_gradient_checkpointing
    checkpointed = unet_and_text_grads(models)
    for expected, got in zip(plain, checkpointed, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("keys", "native"),
    [
        ({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}, 512),
        ({"model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)}, 768),
        ({"conditioner.embedders.1.model.ln_final.weight": (1280,)}, 1024),
        ({"something.else": (4,)}, None),
    ],
    ids=["sd1", "sd2", "sdxl", "unknown"],
)
def test_a_single_files_native_resolution_is_read_from_its_header(tmp_path, keys, native):
    """SD1.x 512, SD2.x 768 (what diffusers loads an SD2 file without a config as: 2.1 768-v),
    SDXL 1024; only the header is read (the tensors here are empty placeholders of the real
    key names and widths)."""
    from edlib.model.models import native_resolution

    path = tmp_path / "model.safetensors"
    save_file({key: torch.zeros(shape) for key, shape in keys.items()}, str(path))
    assert native_resolution(path) == native
    (tmp_path / "model.ckpt").write_bytes(b"pickled")
    assert native_resolution(tmp_path / "model.ckpt") is None
