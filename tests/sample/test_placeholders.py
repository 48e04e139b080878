"""Multi-vector textual-inversion placeholders at sampling time (issue 4's gap): sampling
during training (`pipeline_from_models`, what the sampling plugin calls), `edlib sample RUN`
(`load_pipeline` of a run) and an exported embedding loaded into a pipeline all give the
placeholder all its vectors, exactly as training's `prepare_captions` spells it out."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline

from edlib.export.a1111_embedding import export_a1111_embeddings
from edlib.model.methods.textual_inversion import TextualInversion
from edlib.model.models import encode_prompts, load_models
from edlib.sample.pipeline import load_pipeline, pipeline_from_models

OHWX = {"token": "<ohwx>", "init_word": "person", "num_vectors": 3}
PROMPT = "a photo of <ohwx>, red"
# The same placeholder as users write it: another case (CLIP's tokenizer reads it as the
# placeholder), and already spelled out.
SAME_PROMPTS = [PROMPT, "a photo of <OHWX>, red", "a photo of <ohwx> <ohwx>_1 <ohwx>_2, red"]


def trained_ti(folder):
    models = load_models(folder)
    method = TextualInversion(SimpleNamespace(placeholder_tokens=[OHWX], text_encoder_lr=1e-3, text_encoder_2_lr=None, unet_lr=0.0))
    method.setup(models)
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for group in method.param_groups(models):
            (rows,) = group["params"]
            rows.add_(torch.randn(rows.shape, generator=generator))  # three distinct vectors
    return models, method


@torch.no_grad()
def pipeline_conditioning(pipe, prompt):
    """What the pipeline conditions its UNet on for ``prompt`` (its own encode_prompt)."""
    encoded = pipe.encode_prompt(prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    return [t for t in encoded if t is not None]


@torch.no_grad()
def training_conditioning(models, method, prompt):
    cond = encode_prompts(models, method.prepare_captions([prompt]))
    return [t for t in (cond.hidden, cond.pooled) if t is not None]


def assert_same(actual, expected):
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", ["sd1", "sdxl"])
def test_sampling_from_the_training_modules_gives_every_vector(tiny_model, tiny_sdxl, variant):
    models, method = trained_ti(tiny_sdxl if variant == "sdxl" else tiny_model)
    expected = training_conditioning(models, method, PROMPT)
    one_vector = training_conditioning(models, method, PROMPT.replace("<ohwx>", "<ohwx>_2"))
    pipe = pipeline_from_models(models)
    for prompt in SAME_PROMPTS:
        assert_same(pipeline_conditioning(pipe, prompt), expected)
    assert not torch.allclose(one_vector[0], expected[0])  # the vectors differ, so this test can fail


def test_training_captions_spell_out_any_case_once():
    method = TextualInversion(SimpleNamespace(placeholder_tokens=[OHWX], text_encoder_lr=1e-3))
    spelled = "a photo of <ohwx> <ohwx>_1 <ohwx>_2, red"
    assert method.prepare_captions(SAME_PROMPTS) == [spelled] * 3
    assert method.prepare_captions(["<ohwx>s and <Ohwx>"]) == ["<ohwx> <ohwx>_1 <ohwx>_2s and <ohwx> <ohwx>_1 <ohwx>_2"]


def test_a_placeholder_with_capitals_is_refused(tiny_model):
    config = SimpleNamespace(placeholder_tokens=[{**OHWX, "token": "<OhWx>"}], text_encoder_lr=1e-3, text_encoder_2_lr=None)
    with pytest.raises(ValueError, match="capital letters.*'<ohwx>'"):
        TextualInversion(config).setup(load_models(tiny_model))


def test_an_exported_embedding_gives_every_vector_in_diffusers_and_in_edlib(tiny_model, tmp_path):
    models, method = trained_ti(tiny_model)
    expected = training_conditioning(models, method, PROMPT)
    (path,) = export_a1111_embeddings(method.learned_embeddings(models), tmp_path)

    # plain diffusers, as its docs load an A1111 embedding, with the prompt as captions had it
    plain = StableDiffusionPipeline.from_pretrained(tiny_model, safety_checker=None, requires_safety_checker=False)
    plain.load_textual_inversion(str(path), token="<ohwx>")
    assert_same(pipeline_conditioning(plain, PROMPT), expected)

    # edlib's pipeline of the base model (`edlib sample MODEL`), then the same embedding
    pipe = load_pipeline(tiny_model)
    pipe.load_textual_inversion(str(path), token="<ohwx>")
    for prompt in SAME_PROMPTS:
        assert_same(pipeline_conditioning(pipe, prompt), expected)


def test_a_clip_skip_prompt_gets_every_vector_too(tiny_model):
    # With clip_skip above 1 edlib computes an SD pipeline's prompt embeddings itself.
    from edlib.sample.generate import _prompt_arguments, resolve_spec
    from edlib.sample.prompts import PromptSpec

    models, method = trained_ti(tiny_model)
    pipe = pipeline_from_models(models, clip_skip=2)
    with torch.no_grad():
        expected = encode_prompts(models, method.prepare_captions([PROMPT]), clip_skip=2).hidden
        for prompt in SAME_PROMPTS:
            arguments = _prompt_arguments(pipe, resolve_spec(PromptSpec(prompt=prompt), pipe))
            assert torch.allclose(arguments["prompt_embeds"], expected, rtol=0, atol=1e-6), prompt
