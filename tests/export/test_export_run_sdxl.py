"""`edlib export RUN` on SDXL runs: each method's run goes out in its formats, and diffusers'
loaders read back what the run trained (`load_trained`, the weights sampling uses)."""

import pytest
import torch
from diffusers import StableDiffusionXLPipeline
from safetensors.torch import load_file

from edlib.export import export_run
from edlib.model.models import encode_prompts
from edlib.model.trained import load_trained
from edlib.train.loop import train
from tests.export.outputs import assert_same_outputs, component_outputs
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401 - autouse fixture

pytestmark = pytest.mark.slow  # three short SDXL trainings


def _run(tiny_sdxl, tmp_path, name, **settings):
    data = tmp_path / "data"
    if not data.exists():
        make_data_root(data)
        for image in data.rglob("*.png"):
            image.with_suffix(".txt").write_text(f"a photo of <ohwx>, {image.stem.split('_')[0]}", encoding="utf-8")
    train(tiny_config(tiny_sdxl, data, tmp_path / name, batch_size=2, max_steps=2, **settings))
    return tmp_path / name


def test_full_sdxl_run_exports_as_a_folder_and_a_single_file(tiny_sdxl, tmp_path):
    run = _run(tiny_sdxl, tmp_path, "full", unet_lr=1e-3, text_encoder_lr=1e-4)
    expected = component_outputs(load_trained(run).models)

    (folder,) = export_run(run, "diffusers", dtype="fp32")
    assert_same_outputs(expected, component_outputs(StableDiffusionXLPipeline.from_pretrained(folder)), rtol=0.0)
    (single,) = export_run(run, "single-file", dtype="fp32")
    loaded = StableDiffusionXLPipeline.from_single_file(str(single), config=str(tiny_sdxl), local_files_only=True)
    assert_same_outputs(expected, component_outputs(loaded), rtol=1e-5)
    assert not torch.allclose(component_outputs(StableDiffusionXLPipeline.from_pretrained(tiny_sdxl))["unet"], expected["unet"])


def test_lora_sdxl_run_exports_as_a_kohya_file_diffusers_loads(tiny_sdxl, tmp_path):
    run = _run(tiny_sdxl, tmp_path, "lora", method="lora", network_dim=2, network_alpha=1.0, unet_lr=1e-2, text_encoder_lr=1e-3)
    expected = component_outputs(load_trained(run).models)
    (path,) = export_run(run, "kohya-lora", dtype="fp32")
    keys = load_file(str(path)).keys()
    assert {key.split("_", 2)[1] for key in keys} == {"unet", "te1", "te2"}
    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    pipe.load_lora_weights(str(path))
    assert_same_outputs(expected, component_outputs(pipe), rtol=1e-5)


def test_textual_inversion_sdxl_run_exports_clip_l_and_clip_g(tiny_sdxl, tmp_path):
    run = _run(
        tiny_sdxl, tmp_path, "ti", method="textual_inversion", text_encoder_lr=1e-2,
        placeholder_tokens=[{"token": "<ohwx>", "init_word": "person", "num_vectors": 2}],
    )  # fmt: skip
    trained = load_trained(run)
    (path,) = export_run(run, "a1111-embedding")
    tensors = load_file(str(path))
    assert path.name == "ohwx.safetensors" and set(tensors) == {"clip_l", "clip_g"}
    assert torch.equal(tensors["clip_l"], trained.method.learned_embeddings(trained.models)["<ohwx>"])
    assert torch.equal(tensors["clip_g"], trained.method.learned_embeddings(trained.models, encoder="text_encoder_2")["<ohwx>"])

    pipe = StableDiffusionXLPipeline.from_pretrained(tiny_sdxl)
    pipe.load_textual_inversion(tensors["clip_l"], token="<ohwx>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
    pipe.load_textual_inversion(tensors["clip_g"], token="<ohwx>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2)
    with torch.no_grad():
        expected = encode_prompts(trained.models, trained.method.prepare_captions(["a photo of <ohwx>"]))
        hidden, _, pooled, _ = pipe.encode_prompt("a photo of <ohwx>", device="cpu", do_classifier_free_guidance=False)
    assert torch.allclose(hidden, expected.hidden, rtol=0, atol=1e-6)
    assert torch.allclose(pooled, expected.pooled, rtol=0, atol=1e-6)
