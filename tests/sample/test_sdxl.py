"""Sampling SDXL (issue 9): the same prompt files and samplers, from a folder, from the live
training modules and from a run's checkpoint."""

import numpy as np
import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from PIL import Image

from edlib.model.models import load_models
from edlib.sample import SAMPLER_NAMES, PromptSpec, generate_image, load_pipeline, resolve_spec, sample_images
from edlib.sample.pipeline import pipeline_from_models
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401


def _image(pipeline, **spec):
    with torch.no_grad():
        return np.asarray(generate_image(pipeline, resolve_spec(PromptSpec(**spec), pipeline)))


@pytest.fixture(scope="module")
def sdxl_pipeline(tiny_sdxl):
    return load_pipeline(tiny_sdxl)


def test_an_sdxl_folder_gives_an_sdxl_pipeline_of_its_native_size(sdxl_pipeline):
    assert isinstance(sdxl_pipeline, StableDiffusionXLPipeline)
    assert resolve_spec(PromptSpec("a cat"), sdxl_pipeline).width == 64


@pytest.mark.parametrize("sampler", SAMPLER_NAMES)
def test_every_sampler_runs_on_sdxl(sdxl_pipeline, sampler):
    image = _image(sdxl_pipeline, prompt="a photo of a cat", sampler=sampler, steps=2, seed=3)
    assert image.shape == (64, 64, 3) and image.std() > 0
    assert np.array_equal(image, _image(sdxl_pipeline, prompt="a photo of a cat", sampler=sampler, steps=2, seed=3))


def test_live_modules_sample_what_the_folder_samples(tiny_sdxl, sdxl_pipeline):
    live = pipeline_from_models(load_models(tiny_sdxl))
    assert isinstance(live, StableDiffusionXLPipeline)
    spec = dict(prompt="a red car", negative_prompt="blurry", sampler="DPM++ 2M", steps=3, seed=5, width=64, height=96)
    np.testing.assert_array_equal(_image(live, **spec), _image(sdxl_pipeline, **spec))


def test_a_trained_sdxl_run_samples_its_own_weights(tiny_sdxl, tmp_path):
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_config(tiny_sdxl, data, run, batch_size=2, max_steps=2, unet_lr=1e-2))
    spec = dict(prompt="red", sampler="Euler", steps=2, seed=1)
    trained = _image(load_pipeline(run), **spec)
    base = _image(load_pipeline(tiny_sdxl), **spec)
    assert not np.array_equal(trained, base)  # the run's weights, not the base model's
    paths = sample_images(load_pipeline(run), [PromptSpec(**spec)], tmp_path / "out")
    np.testing.assert_array_equal(np.asarray(Image.open(paths[0]).convert("RGB")), trained)
