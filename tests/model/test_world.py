"""The bundled world model: it loads offline from the package, is the architecture
edlib.model.world describes, and draws the asked colours, shapes and backgrounds, also for
(colour, shape) pairs it never saw."""

import json

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel

from edlib.demo.evaluate import evaluate, generate
from edlib.model.world import (
    UNET_CONFIG,
    VAE_CONFIG,
    build_world_pipeline,
    bundled_model_path,
)
from edlib.sample import load_pipeline
from edlib.world import caption_split, held_out_captions, sample_scene
from edlib.world.check import classify
from edlib.world.grammar import caption
from edlib.world.render import NOVEL_SHAPES, SHAPES

# Measured on the committed model with the settings of the tests below (16 captions, 12
# DPM++ 2M steps): the check finds a shape in 100% of the images, with a mean template
# overlap of 0.90; on training pairs it reads the asked colour and shape in 100%, on
# held-out pairs colour 100% and shape 94% (chance: colour 1/8, shape 1/7). With 8 steps
# colour falls to 88% and 56%: this model needs more sampler steps than the first one did.
EVAL_STEPS = 12
MIN_DRAWN = 0.875
MIN_MEAN_OVERLAP = 0.75
MIN_COLOUR_ACCURACY = 0.75
MIN_SHAPE_ACCURACY = 0.75


@pytest.fixture(scope="module")
def bundled():
    return load_pipeline(bundled_model_path(), dtype=torch.float32)


def test_bundled_model_loads_offline_from_the_package():
    path = bundled_model_path()
    assert path.parent.name == "world" and (path / "model_index.json").is_file()
    assert (path / "README.md").is_file()
    # Weights are safetensors and small enough to commit.
    weights = list(path.rglob("*.safetensors"))
    assert {w.parent.name for w in weights} == {"unet", "vae", "text_encoder"}
    assert sum(w.stat().st_size for w in weights) < 30 * 2**20
    pipeline = StableDiffusionPipeline.from_pretrained(path, local_files_only=True, safety_checker=None)
    assert isinstance(pipeline.unet, UNet2DConditionModel)
    assert isinstance(pipeline.vae, AutoencoderKL)
    assert isinstance(pipeline.text_encoder, CLIPTextModel)
    assert tuple(pipeline.unet.config.block_out_channels) == UNET_CONFIG["block_out_channels"]
    assert tuple(pipeline.vae.config.block_out_channels) == VAE_CONFIG["block_out_channels"]
    # The VAE's latent scale was set from its trained latents, not left at the placeholder.
    assert pipeline.vae.config.scaling_factor != VAE_CONFIG["scaling_factor"]


def test_model_card_tells_every_phase_that_made_the_weights():
    """pretraining.json records each run and phase (a continued model keeps the earlier
    ones); the card, written from it, names each command and phase."""
    path = bundled_model_path()
    runs = json.loads((path / "pretraining.json").read_text())["runs"]
    card = (path / "README.md").read_text()
    phases = [phase for run in runs for phase in run["phases"]]
    assert phases and phases[0]["start"] == "random weights"
    for number, phase in enumerate(phases, 1):
        assert f"phase {number}: {phase['steps']} steps from {phase['start']}" in card
    for run in runs:
        assert f"`{run['command']}`" in card


def test_tokenizer_gives_novel_shapes_one_token_it_never_trained_on(bundled):
    """A fine-tune can teach "zorblat": it is one token of its own (not pieces shared with
    "orange" and "black"), so teaching it changes no known word."""
    tokenizer = bundled.tokenizer
    for word in NOVEL_SHAPES:
        ids = tokenizer(word, add_special_tokens=False).input_ids
        assert len(ids) == 1 and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids).strip() == word


def test_bundled_model_samples_and_trains_on_a_zero_terminal_snr_v_schedule():
    from edlib.model.models import load_models

    config = json.loads((bundled_model_path() / "scheduler" / "scheduler_config.json").read_text())
    assert config["prediction_type"] == "v_prediction" and config["rescale_betas_zero_snr"] is True
    assert config["timestep_spacing"] == "trailing"
    models = load_models(bundled_model_path())  # no zero_terminal_snr asked: the model's own schedule
    assert models.prediction_type == "v_prediction" and models.noise_scheduler.alphas_cumprod[-1] == 0


def test_untrained_architecture_is_written_as_a_diffusers_folder(tmp_path):
    out = build_world_pipeline(tmp_path / "untrained", seed=3)
    index = json.loads((out / "model_index.json").read_text())
    assert index["scheduler"][1] == "DDIMScheduler"
    pipeline = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipeline.vae.config.block_out_channels[-1] == VAE_CONFIG["block_out_channels"][-1]
    assert pipeline.unet.config.sample_size * 4 == 64


def _training_captions(count: int) -> list[str]:
    pairs = sorted(caption_split(seed=0).train)
    rng = np.random.default_rng(11)
    return [caption(sample_scene(rng, shapes=[s], colours=[c])) for c, s in (pairs[i * 3 % len(pairs)] for i in range(count))]


def test_bundled_model_draws_world_images(bundled):
    """One shape on a plain background, as the world's images are: the check finds a
    shape in most images and its outline overlaps a template well."""
    images = generate(bundled, _training_captions(16), steps=EVAL_STEPS, batch_size=16)
    seen = [classify(image, shapes=SHAPES) for image in images]
    assert sum(s.shape is not None for s in seen) / len(seen) >= MIN_DRAWN
    assert np.mean([s.confidence for s in seen]) >= MIN_MEAN_OVERLAP


def test_bundled_model_draws_asked_colours_and_shapes(bundled):
    result = evaluate(bundled, _training_captions(16), steps=EVAL_STEPS, shapes=SHAPES, batch_size=16)
    assert result["n"] == 16
    assert result["colour"] >= MIN_COLOUR_ACCURACY, result
    assert result["shape"] >= MIN_SHAPE_ACCURACY, result


def test_bundled_model_composes_colour_and_shape_pairs_it_never_saw(bundled):
    """The model card's honest row: pretraining never drew these (colour, shape) pairs."""
    captions = held_out_captions(caption_split(seed=0), 16, seed=1)
    result = evaluate(bundled, captions, steps=EVAL_STEPS, shapes=SHAPES, batch_size=16)
    assert result["colour"] >= MIN_COLOUR_ACCURACY, result
    assert result["shape"] >= MIN_SHAPE_ACCURACY, result


def test_background_follows_the_prompt_not_the_seed(bundled):
    """The defect of the first bundled model: trained on SD1.5's schedule, it read the
    background off the noise, so one seed gave one background whatever the prompt said."""
    backgrounds = ["blue", "white", "black", "yellow"]
    captions = [f"a large red circle in the center on a {b} background" for b in backgrounds]
    seen = []
    for seed in (0, 1):
        images = [generate(bundled, [c], steps=EVAL_STEPS, seed=seed)[0] for c in captions]
        seen += [classify(image).background for image in images]
    hits = sum(s == b for s, b in zip(seen, backgrounds * 2))
    assert hits >= 6, list(zip(backgrounds * 2, seen))


def test_evaluate_saves_what_it_scored(bundled, tmp_path):
    captions = held_out_captions(caption_split(seed=0), 2)
    result = evaluate(bundled, captions, steps=2, save_dir=tmp_path / "eval")
    assert result["n"] == 2
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == ["000.png", "000.txt", "001.png", "001.txt"]
    assert (tmp_path / "eval" / "001.txt").read_text().strip() == captions[1]
