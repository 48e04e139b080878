"""Sampling on the tiny models: every sampler, reproducibility, files with their settings, and
sampling in the middle of training leaving modes, weights and RNG streams as they were."""

import random

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionPipeline
from diffusers.training_utils import EMAModel
from PIL import Image

from edlib.sample import (
    SAMPLER_NAMES,
    PromptSpec,
    generate_image,
    load_pipeline,
    parse_parameters,
    pipeline_from_modules,
    read_parameters,
    resolve_spec,
    sample_images,
)
from edlib.sample.generate import GRID_NAME, VAE_TILING_ABOVE, vae_memory_savers


def _pixels(image_or_path):
    image = Image.open(image_or_path) if not isinstance(image_or_path, Image.Image) else image_or_path
    return np.asarray(image.convert("RGB"))


def _image(pipeline, **spec):
    with torch.no_grad():
        return generate_image(pipeline, resolve_spec(PromptSpec(**spec), pipeline))


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs(tiny_pipeline, sampler):
    image = _image(tiny_pipeline, prompt="a photo of a cat", sampler=sampler, steps=2)

    assert image.size == (64, 64)
    assert _pixels(image).std() > 0  # an image, not a blank


@pytest.mark.parametrize("sampler", ["Euler a", "DPM++ SDE Karras", "DPM++ 2M SDE"])
def test_same_seed_same_image_different_seed_different_image(tiny_pipeline, sampler):
    # Stochastic samplers draw noise at every step: it must come from the seed too.
    first = _image(tiny_pipeline, prompt="a red car", sampler=sampler, steps=2, seed=7)
    again = _image(tiny_pipeline, prompt="a red car", sampler=sampler, steps=2, seed=7)
    other = _image(tiny_pipeline, prompt="a red car", sampler=sampler, steps=2, seed=8)

    assert np.array_equal(_pixels(first), _pixels(again))
    assert not np.array_equal(_pixels(first), _pixels(other))


def test_v_prediction_model_samples(tiny_v_model):
    pipeline = load_pipeline(tiny_v_model)
    image = _image(pipeline, prompt="a dog", sampler="DPM++ 2M Karras", steps=2, width=64, height=96)

    assert image.size == (64, 96)


def test_sample_images_writes_step_folder_grid_and_parameters(tiny_pipeline, tmp_path):
    prompts = [
        PromptSpec("a photo of a cat, close up", negative_prompt="blurry", seed=3, steps=2, sampler="euler a"),
        PromptSpec("a dog\non the beach", seed=-1, steps=3, cfg_scale=5.5, width=96, height=64),
    ]

    paths = sample_images(tiny_pipeline, prompts, tmp_path / "samples", step=12, model_name="my run")

    folder = tmp_path / "samples" / "step-000012"
    assert [p.parent for p in paths] == [folder, folder]
    first, second = (parse_parameters(read_parameters(p)) for p in paths)
    assert first == {
        "prompt": "a photo of a cat, close up",
        "negative_prompt": "blurry",
        "steps": 2,
        "sampler": "Euler a",
        "cfg_scale": 7.0,
        "seed": 3,
        "width": 64,  # the model's native size
        "height": 64,
        "model": "my run",
    }
    assert second["prompt"] == "a dog\non the beach"
    assert (second["width"], second["height"], second["cfg_scale"]) == (96, 64, 5.5)
    assert second["seed"] >= 0  # -1 became a real seed, recorded so the image can be made again
    assert Image.open(paths[1]).size == (96, 64)

    # The recorded settings make the same image again.
    remade = _image(tiny_pipeline, **{k: second[k] for k in ("prompt", "seed", "steps", "cfg_scale", "width", "height", "sampler")})
    assert np.array_equal(_pixels(remade), _pixels(paths[1]))

    grid = Image.open(folder / GRID_NAME)
    assert grid.size == (2 * 96, 64)
    assert np.array_equal(_pixels(grid)[:, :64], _pixels(paths[0]))
    assert np.array_equal(_pixels(grid)[:, 96:], _pixels(paths[1]))
    assert parse_parameters(read_parameters(folder / GRID_NAME))["prompt"] == "a photo of a cat, close up"


def _rng_states():
    return (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone())


def _training_modules(model_dir):
    """Modules as a training loop holds them: UNet training (one submodule deliberately in
    eval), frozen VAE and text encoder in eval."""
    pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None, requires_safety_checker=False)
    pipe.unet.train()
    pipe.unet.conv_in.eval()
    return pipe


def test_sampling_mid_training_leaves_modes_weights_and_rng_as_they_were(tiny_model, tmp_path):
    pipe = _training_modules(tiny_model)
    weights = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    modes_before = {name: m.training for name, m in pipe.unet.named_modules()}
    seen_training = []
    pipe.unet.register_forward_pre_hook(lambda module, args: seen_training.append(module.training))
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    states_before = _rng_states()

    paths = sample_images(
        {
            "unet": pipe.unet,
            "vae": pipe.vae,
            "text_encoder": pipe.text_encoder,
            "tokenizer": pipe.tokenizer,
            "scheduler_config": pipe.scheduler.config,
        },
        [PromptSpec("a cat", steps=2, sampler=name) for name in ("DPM++ SDE Karras", "Euler a", "DDIM")],
        tmp_path,
    )

    assert len(paths) == 3
    assert seen_training and not any(seen_training)  # sampled in eval mode
    assert {name: m.training for name, m in pipe.unet.named_modules()} == modes_before
    assert not pipe.vae.training and not pipe.text_encoder.training
    states_after = _rng_states()
    assert states_after[0] == states_before[0]
    assert np.array_equal(states_after[1], states_before[1])
    assert torch.equal(states_after[2], states_before[2])
    assert all(torch.equal(v, weights[k]) for k, v in pipe.unet.state_dict().items())
    assert all(p.grad is None for p in pipe.unet.parameters())


def test_live_modules_sample_what_the_model_on_disk_samples(tiny_model, tiny_pipeline):
    pipe = _training_modules(tiny_model)
    live = pipeline_from_modules(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config)

    assert live.unet is pipe.unet and live.vae is pipe.vae  # no copies, no reload
    spec = dict(prompt="a house", steps=2, seed=11, sampler="UniPC")
    assert np.array_equal(_pixels(_image(live, **spec)), _pixels(_image(tiny_pipeline, **spec)))


def test_ema_weights_are_sampled_and_training_weights_restored(tiny_model, other_tiny_model, tmp_path):
    pipe = _training_modules(tiny_model)
    # An EMA whose averages are another model's weights: images must come from those.
    ema = EMAModel(pipe.unet.parameters())
    other = load_pipeline(other_tiny_model)
    ema.shadow_params = [p.detach().clone() for p in other.unet.parameters()]
    training_weights = [p.detach().clone() for p in pipe.unet.parameters()]
    prompt = [PromptSpec("a tree", steps=2, seed=5)]

    live = pipeline_from_modules(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, ema=ema)
    with_ema = sample_images(live, prompt, tmp_path / "ema")

    # The other model's UNet with this model's VAE and text encoder: what EMA sampling must give.
    reference = pipeline_from_modules(other.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config)
    expected = sample_images(reference, prompt, tmp_path / "reference")
    assert np.array_equal(_pixels(with_ema[0]), _pixels(expected[0]))
    assert all(torch.equal(p, q) for p, q in zip(pipe.unet.parameters(), training_weights))


def test_ema_of_another_model_is_refused(tiny_model, tmp_path):
    pipe = _training_modules(tiny_model)
    ema = EMAModel(list(pipe.unet.parameters())[:3])
    live = pipeline_from_modules(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, ema=ema)

    with pytest.raises(ValueError, match="the EMA model tracks 3 parameters"):
        sample_images(live, [PromptSpec("x", steps=1)], tmp_path)


def test_large_images_decode_with_vae_tiling_and_slicing_then_settings_return(tiny_pipeline):
    vae = tiny_pipeline.vae
    assert not vae.use_tiling and not vae.use_slicing

    with vae_memory_savers(vae, VAE_TILING_ABOVE + 8, 512):
        assert vae.use_tiling and vae.use_slicing
    assert not vae.use_tiling and not vae.use_slicing

    with vae_memory_savers(vae, VAE_TILING_ABOVE, VAE_TILING_ABOVE):
        assert not vae.use_tiling


def test_bad_arguments(tiny_pipeline, tmp_path):
    with pytest.raises(ValueError, match="no prompts"):
        sample_images(tiny_pipeline, [], tmp_path)
    with pytest.raises(TypeError, match="expected a diffusers pipeline or a mapping"):
        sample_images("not a pipeline", [PromptSpec("x")], tmp_path)


@pytest.mark.gpu
def test_mixed_precision_sampling_on_gpu_keeps_cuda_rng(tiny_model, tmp_path):
    pipe = _training_modules(tiny_model)
    pipe.unet.to("cuda")  # fp32 weights, trained under autocast
    pipe.vae.to("cuda", torch.float16)  # frozen parts in half precision, as trainers keep them
    pipe.text_encoder.to("cuda", torch.float16)
    torch.cuda.manual_seed(3)
    cuda_before = torch.cuda.get_rng_state()

    paths = sample_images(
        pipeline_from_modules(pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config),
        [PromptSpec("a cat", steps=2, sampler="Euler a")],
        tmp_path,
        autocast_dtype=torch.float16,
    )

    assert Image.open(paths[0]).size == (64, 64)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_before)
