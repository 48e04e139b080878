"""The tiny pipelines load through diffusers' own loader and look like SD1 / SD2-v."""

import json

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

from edlib.model.tiny import build_tiny_pipeline, build_tiny_tokenizer


def _folder_bytes(path):
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_sd1_loads_offline_as_epsilon_pipeline(tiny_sd1):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1)
    assert pipe.scheduler.config.prediction_type == "epsilon"
    assert pipe.scheduler.config.beta_schedule == "scaled_linear"
    assert pipe.scheduler.config.beta_start == 0.00085 and pipe.scheduler.config.beta_end == 0.012
    assert pipe.scheduler.config.num_train_timesteps == 1000
    assert pipe.text_encoder.config.hidden_act == "quick_gelu"
    assert pipe.unet.config.use_linear_projection is False
    assert pipe.safety_checker is None
    assert _folder_bytes(tiny_sd1) < 5_000_000


def test_sd2v_has_sd2_shapes_and_v_prediction(tiny_sd2v):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd2v)
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.unet.config.use_linear_projection is True
    assert list(pipe.unet.config.attention_head_dim) == [2, 4]
    assert pipe.text_encoder.config.hidden_act == "gelu"


def test_vae_factor_is_read_from_config_and_matches_latents(tiny_sd1):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1)
    factor = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    assert factor == 4  # deliberately not SD's 8: code must read it from the config
    with torch.no_grad():
        latents = pipe.vae.encode(torch.zeros(1, 3, 64, 128)).latent_dist.mean
    assert latents.shape == (1, 4, 64 // factor, 128 // factor)
    assert pipe.unet.config.sample_size == 64 // factor


def test_pipeline_generates_an_image_end_to_end(tiny_sd2v):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd2v)
    out = pipe("a photo of a cat", num_inference_steps=2, height=64, width=64, output_type="np")
    assert out.images.shape == (1, 64, 64, 3)
    assert torch.isfinite(torch.from_numpy(out.images)).all()


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    a = build_tiny_pipeline(tmp_path / "a", seed=3)
    b = build_tiny_pipeline(tmp_path / "b", seed=3)
    c = build_tiny_pipeline(tmp_path / "c", seed=4)
    weights = "unet/diffusion_pytorch_model.safetensors"
    wa, wb, wc = (load_file(p / weights) for p in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_resolution_sets_unet_sample_size_and_bad_values_are_refused(tmp_path):
    path = build_tiny_pipeline(tmp_path / "m", resolution=128)
    assert json.loads((path / "unet" / "config.json").read_text())["sample_size"] == 32
    with pytest.raises(ValueError, match="resolution"):
        build_tiny_pipeline(tmp_path / "bad", resolution=60)
    with pytest.raises(ValueError, match="variant.*sd1, sd2-v, sdxl, sdxl-v, sd3, flux, flux-schnell"):
        build_tiny_pipeline(tmp_path / "bad2", variant="sd4")


def test_tokenizer_gives_words_one_token_and_spells_out_anything_else(tmp_path):
    tok = build_tiny_tokenizer(tmp_path / "tok", words=["photo", "zorblax"])
    assert tok.model_max_length == 77
    ids = tok("Photo zorblax").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert tok.convert_ids_to_tokens(ids[1:-1]) == ["photo</w>", "zorblax</w>"]
    # Text outside the word list, including non-ASCII, still tokenizes and round-trips.
    text = "qwv 123, héllo ☃!"
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids[1:-1]
    assert tok.decode(ids, skip_special_tokens=True).replace(" ", "") == text.replace(" ", "")


def test_tokenizer_gives_one_token_to_words_that_share_pieces(tmp_path):
    # A merge chain per word broke when another word's merges came first: "orange" and
    # "black" ranked `o r` and `b l a` early, so "zorblat" came out as z|or|bla|t and
    # "background" as back|gr|o|u|n|d.
    words = ["orange", "black", "round", "ground", "background", "zorblat", "big", "right", "on", "a"]
    tok = build_tiny_tokenizer(tmp_path / "tok", words=words)
    for word in words:
        assert tok.tokenize(word) == [word + "</w>"], word
    assert tok.tokenize("a big zorblat on a black background") == [
        w + "</w>" for w in "a big zorblat on a black background".split()
    ]


def test_tokenizer_pads_and_truncates_to_77(tiny_sd1):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_sd1)
    enc = pipe.tokenizer(
        ["a cat", "dog " * 200],
        padding="max_length",
        truncation=True,
        max_length=pipe.tokenizer.model_max_length,
        return_tensors="pt",
    )
    assert enc.input_ids.shape == (2, 77)
    assert int(enc.input_ids.max()) < pipe.text_encoder.config.vocab_size
