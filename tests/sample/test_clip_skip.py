"""Samples see the text encoder layer the model trains on: a run with `clip_skip: 2` samples
(during training and after) with the penultimate layer, and says so in each PNG."""

import numpy as np
import pytest
import torch

from edlib.model.models import encode_prompts, load_models
from edlib.sample import (
    PromptSpec,
    generate_image,
    load_pipeline,
    parse_parameters,
    read_parameters,
    resolve_spec,
    sample_images,
)
from edlib.sample.samplers import make_scheduler
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401


def test_sdxl_pipelines_clip_skip_is_the_layer_training_uses(tiny_sdxl):
    pipeline, models = load_pipeline(tiny_sdxl), load_models(tiny_sdxl)
    with torch.no_grad():
        sampled = pipeline.encode_prompt("a red cat", device="cpu", do_classifier_free_guidance=False, clip_skip=1)[0]
        trained = encode_prompts(models, ["a red cat"], clip_skip=2).hidden
    torch.testing.assert_close(sampled, trained)


def test_sd_samples_with_clip_skip_use_the_embeddings_training_uses(tiny_model):
    # diffusers' own SD clip_skip path fails on transformers 5; edlib encodes the prompt itself.
    models, pipeline = load_models(tiny_model), load_pipeline(tiny_model)
    spec = resolve_spec(PromptSpec("a red car", negative_prompt="blue", steps=2, seed=4, clip_skip=2), pipeline)
    with torch.no_grad():
        image = np.asarray(generate_image(pipeline, spec))
        embeds = [encode_prompts(models, [text], clip_skip=2).hidden for text in ("a red car", "blue")]
        pipeline.scheduler = make_scheduler(spec.sampler, pipeline.scheduler.config, seed=spec.seed)
        expected = pipeline(
            prompt_embeds=embeds[0], negative_prompt_embeds=embeds[1], num_inference_steps=2,
            guidance_scale=spec.cfg_scale, width=64, height=64, output_type="np",
            generator=torch.Generator().manual_seed(4),
        ).images[0]
    assert image.shape == (64, 64, 3) and expected.shape == (64, 64, 3)
    assert np.abs(image.astype(float) - expected * 255).max() <= 1.0


def test_a_prompts_clip_skip_changes_the_image_and_is_written_to_the_png(tiny_pipeline, tmp_path):
    def image(**spec):
        with torch.no_grad():
            return np.asarray(generate_image(tiny_pipeline, resolve_spec(PromptSpec("a red car", steps=2, **spec), tiny_pipeline)))

    assert np.array_equal(image(), image(clip_skip=1))
    assert not np.array_equal(image(), image(clip_skip=2))
    (path,) = sample_images(tiny_pipeline, [PromptSpec("a red car", steps=2, clip_skip=2)], tmp_path)
    assert parse_parameters(read_parameters(path))["clip_skip"] == 2
    (plain,) = sample_images(tiny_pipeline, [PromptSpec("a red car", steps=2)], tmp_path / "plain")
    assert "Clip skip" not in read_parameters(plain)  # as A1111: only when not the default
    with pytest.raises(ValueError, match="clip_skip must be at least 1"):
        PromptSpec("x", clip_skip=0)


def test_a_run_with_clip_skip_2_samples_with_it_during_and_after_training(tiny_model, tmp_path):
    run = tmp_path / "run"
    config = tiny_config(tiny_model, make_data_root(tmp_path / "data"), run, clip_skip=2, max_steps=1, sample_prompts=["red"])
    train(config)
    (during,) = sorted((run / "samples").glob("step-*/0*.png"))
    assert parse_parameters(read_parameters(during))["clip_skip"] == 2
    after = load_pipeline(run)
    assert resolve_spec(PromptSpec("red"), after).clip_skip == 2
    assert resolve_spec(PromptSpec("red", clip_skip=1), after).clip_skip == 1  # a prompt may still say
