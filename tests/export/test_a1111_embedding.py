"""A1111 embedding export: one `emb_params` file per placeholder, named so A1111 can trigger
it, that diffusers' `load_textual_inversion` loads into a fresh pipeline whose text encoder
then computes what the trained one computes."""

from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline
from safetensors import safe_open
from safetensors.torch import load_file

from edlib.export.a1111_embedding import embedding_file_name, export_a1111_embedding, export_a1111_embeddings
from edlib.model.methods.textual_inversion import TextualInversion
from edlib.model.models import encode_prompts, load_models

PLACEHOLDERS = [{"token": "<ohwx>", "init_word": "person", "num_vectors": 3}, {"token": "<zz>", "init_word": "cat"}]
PROMPT = "a photo of <ohwx> next to a <zz>"


def trained_embeddings(folder):
    """The tiny model with textual inversion set up and its new rows moved off their initial
    values (as training would), so the export must carry the learned vectors."""
    models = load_models(folder)
    method = TextualInversion(SimpleNamespace(placeholder_tokens=PLACEHOLDERS, text_encoder_lr=1e-3, text_encoder_2_lr=None, unet_lr=0.0))
    method.setup(models)
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for group in method.param_groups(models):  # SDXL: both encoders' rows
            (rows,) = group["params"]
            rows.add_(torch.randn(rows.shape, generator=generator))
    return models, method


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_diffusers_loads_each_embedding_and_encodes_the_same(tiny_folders, tmp_path, variant):
    folder = tiny_folders[variant]
    models, method = trained_embeddings(folder)
    with torch.no_grad():
        expected = encode_prompts(models, method.prepare_captions([PROMPT])).hidden

    paths = export_a1111_embeddings(method.learned_embeddings(models), tmp_path / "embeddings")
    assert [p.name for p in paths] == ["ohwx.safetensors", "zz.safetensors"]

    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    for token, path in zip(["<ohwx>", "<zz>"], paths):
        pipe.load_textual_inversion(str(path), token=token)
    prompt = pipe.maybe_convert_prompt(PROMPT, pipe.tokenizer)  # what the pipeline does before encoding
    ids = pipe.tokenizer([prompt], padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        actual = pipe.text_encoder(ids).last_hidden_state
    assert torch.allclose(actual, expected, rtol=0, atol=1e-6)


def test_sdxl_embedding_holds_clip_l_and_clip_g_that_diffusers_loads_per_encoder(tiny_sdxl, tmp_path):
    models, method = trained_embeddings(tiny_sdxl)
    with torch.no_grad():
        expected = encode_prompts(models, method.prepare_captions([PROMPT]))
    paths = export_a1111_embeddings(
        method.learned_embeddings(models), tmp_path, embeddings_g=method.learned_embeddings(models, encoder="text_encoder_2")
    )
    assert [p.name for p in paths] == ["ohwx.safetensors", "zz.safetensors"]

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    for token, path in zip(["<ohwx>", "<zz>"], paths):
        tensors = load_file(str(path))
        assert set(tensors) == {"clip_l", "clip_g"}
        assert tensors["clip_l"].shape[1] == 32 and tensors["clip_g"].shape[1] == 48
        # as diffusers documents for SDXL embeddings: each tensor into its own encoder
        pipe.load_textual_inversion(tensors["clip_l"], token=token, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(tensors["clip_g"], token=token, text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    with torch.no_grad():
        hidden, _, pooled, _ = pipe.encode_prompt(PROMPT, device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(hidden, expected.hidden, rtol=0, atol=1e-6)
    assert torch.allclose(pooled, expected.pooled, rtol=0, atol=1e-6)


def test_file_holds_emb_params_and_the_name(tiny_folders, tmp_path):
    models, method = trained_embeddings(tiny_folders["sd1"])
    learned = method.learned_embeddings(models)
    path = export_a1111_embedding("<ohwx>", learned["<ohwx>"], tmp_path / "ohwx.safetensors", metadata={"steps": 100})
    with safe_open(str(path), "pt") as f:
        assert list(f.keys()) == ["emb_params"]
        assert torch.equal(f.get_tensor("emb_params"), learned["<ohwx>"])
        metadata = f.metadata()
    assert (metadata["name"], metadata["num_vectors"], metadata["steps"]) == ("<ohwx>", "3", "100")


def test_file_names_drop_characters_file_systems_refuse():
    assert embedding_file_name("<ohwx>") == "ohwx.safetensors"
    assert embedding_file_name("my:style*") == "mystyle.safetensors"
    with pytest.raises(ValueError, match="file name"):
        embedding_file_name("<>")


def test_bad_inputs_are_clear_errors(tmp_path):
    vectors = torch.zeros(2, 8)
    with pytest.raises(ValueError, match="same file name"):
        export_a1111_embeddings({"<a>": vectors, "a": vectors}, tmp_path)
    with pytest.raises(ValueError, match=r"\[num_vectors, dim\]"):
        export_a1111_embedding("<a>", torch.zeros(8), tmp_path / "a.safetensors")
    with pytest.raises(ValueError, match="must end in .safetensors"):
        export_a1111_embedding("<a>", vectors, tmp_path / "a.pt")
    with pytest.raises(ValueError, match="2 clip_l vectors but 3 clip_g"):
        export_a1111_embedding("<a>", vectors, tmp_path / "a.safetensors", vectors_g=torch.zeros(3, 8))
    with pytest.raises(ValueError, match="clip_g has"):
        export_a1111_embeddings({"<a>": vectors}, tmp_path, embeddings_g={"<b>": vectors})
    assert list(tmp_path.iterdir()) == []
