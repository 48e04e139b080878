"""kohya LoRA export: every key follows kohya's naming for its module type, the metadata says
what the network is, and diffusers' own `load_lora_weights` loads the file into a fresh
pipeline that computes what the trained model computes."""

import json
import re
from types import SimpleNamespace

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from edlib.export.kohya_lora import export_kohya_lora, kohya_state_dict
from edlib.model.methods.lora import LoraMethod, adapter_parameters
from edlib.model.models import load_models

_BLOCK = r"(down_blocks_\d+|mid_block|up_blocks_\d+)"
_TENSOR = r"\.(lora_down\.weight|lora_up\.weight|alpha)$"
# Expected kohya key patterns, one per module type.
KOHYA_PATTERNS = {
    "attention": rf"^lora_unet_{_BLOCK}_attentions_\d+_transformer_blocks_\d+_attn[12]_(to_q|to_k|to_v|to_out_0){_TENSOR}",
    "feed_forward": rf"^lora_unet_{_BLOCK}_attentions_\d+_transformer_blocks_\d+_ff_net_(0_proj|2){_TENSOR}",
    "projection": rf"^lora_unet_{_BLOCK}_attentions_\d+_(proj_in|proj_out){_TENSOR}",
    "resnet_conv": rf"^lora_unet_{_BLOCK}_resnets_\d+_(conv1|conv2){_TENSOR}",
    "resnet_linear": rf"^lora_unet_{_BLOCK}_resnets_\d+_(conv_shortcut|time_emb_proj){_TENSOR}",
    "sampler_conv": rf"^lora_unet_(down_blocks_\d+_downsamplers|up_blocks_\d+_upsamplers)_0_conv{_TENSOR}",
    "text_attention": rf"^lora_te_text_model_encoder_layers_\d+_self_attn_(q_proj|k_proj|v_proj|out_proj){_TENSOR}",
    "text_mlp": rf"^lora_te_text_model_encoder_layers_\d+_mlp_(fc1|fc2){_TENSOR}",
}


def trained_lora(folder, **settings):
    """The tiny model with LoRA adapters set to random values. lora_up starts at zero, so an
    untrained adapter would change nothing and the round trip would prove nothing; random
    values stand for trained ones."""
    values = dict(network_dim=4, network_alpha=2.0, conv_dim=None, conv_alpha=1.0)
    values.update(unet_lr=1e-4, text_encoder_lr=0.0, text_encoder_2_lr=None, mixed_precision="no")
    values.update(settings)
    models = load_models(folder)
    LoraMethod(SimpleNamespace(**values)).setup(models)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in (models.unet, models.text_encoder):
            for param in adapter_parameters(module).values():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return models


@torch.no_grad()
def outputs(tokenizer, text_encoder, unet) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(11)
    ids = tokenizer(["a photo of a red cat"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    text = text_encoder(ids).last_hidden_state.float()
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    sample = unet(latents.to(unet.dtype), 500, encoder_hidden_states=text.to(unet.dtype)).sample.float()
    return {"text_encoder": text, "unet": sample}


def loaded_with_diffusers(folder, path, dtype=torch.float32) -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(folder, dtype=dtype, safety_checker=None, requires_safety_checker=False)
    pipe.load_lora_weights(str(path))
    return pipe


def assert_close(expected, actual, rtol):
    for name, want in expected.items():
        error = (actual[name] - want).abs().max().item()
        assert error <= rtol * want.abs().max().item(), f"{name}: max error {error:.3g}"


def test_every_key_follows_the_kohya_pattern_of_its_module_type(tiny_folders):
    models = trained_lora(tiny_folders["sd1"], conv_dim=2, conv_alpha=1.0, text_encoder_lr=1e-4)
    tensors = kohya_state_dict(models.unet, models.text_encoder)
    matched = {kind: 0 for kind in KOHYA_PATTERNS}
    for key in tensors:
        kinds = [kind for kind, pattern in KOHYA_PATTERNS.items() if re.match(pattern, key)]
        assert len(kinds) == 1, f"{key} matches {kinds or 'no kohya pattern'}"
        matched[kinds[0]] += 1
    assert all(matched.values()), f"module types with no keys: {[k for k, n in matched.items() if not n]}"

    # Each layer has down, up and alpha; a 3x3 conv's down has the base kernel, its up is 1x1.
    layers = {key.rsplit(".", 2)[0] if "weight" in key else key.rsplit(".", 1)[0] for key in tensors}
    assert len(tensors) == 3 * len(layers)
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"
    assert tensors[f"{conv}.lora_down.weight"].shape == (2, 32, 3, 3)
    assert tensors[f"{conv}.lora_up.weight"].shape == (32, 2, 1, 1)
    assert tensors[f"{conv}.alpha"].item() == 1.0
    assert tensors["lora_unet_mid_block_attentions_0_transformer_blocks_0_attn2_to_k.alpha"].item() == 2.0


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_diffusers_loads_the_export_and_computes_the_same(tiny_folders, tmp_path, variant):
    folder = tiny_folders[variant]
    models = trained_lora(folder, conv_dim=2, conv_alpha=1.0, text_encoder_lr=1e-4)
    expected = outputs(models.tokenizer, models.text_encoder, models.unet)
    path = export_kohya_lora(models.unet, models.text_encoder, tmp_path / "my lora.safetensors", dtype="fp32")

    pipe = loaded_with_diffusers(folder, path)
    actual = outputs(pipe.tokenizer, pipe.text_encoder, pipe.unet)
    assert_close(expected, actual, rtol=1e-5)
    # and the adapters matter: the base pipeline computes something else
    pipe.unet.disable_adapters()
    assert not torch.allclose(outputs(pipe.tokenizer, pipe.text_encoder, pipe.unet)["unet"], expected["unet"], rtol=1e-3)


def test_fp16_export_loads_within_half_precision(tiny_folders, tmp_path):
    models = trained_lora(tiny_folders["sd1"])
    expected = outputs(models.tokenizer, models.text_encoder, models.unet)
    path = export_kohya_lora(models.unet, models.text_encoder, tmp_path / "lora.safetensors")
    with safe_open(str(path), "pt") as f:
        assert {f.get_tensor(key).dtype for key in f.keys()} == {torch.float16}
    pipe = loaded_with_diffusers(tiny_folders["sd1"], path)
    assert_close(expected, outputs(pipe.tokenizer, pipe.text_encoder, pipe.unet), rtol=5e-3)


def test_metadata_describes_the_network(tiny_folders, tmp_path):
    models = trained_lora(tiny_folders["sd2"], network_dim=4, network_alpha=2.0, conv_dim=2, conv_alpha=1.0)
    path = export_kohya_lora(
        models.unet, models.text_encoder, tmp_path / "style.safetensors", base_model="tiny-sd2", metadata={"steps": 30}
    )
    with safe_open(str(path), "pt") as f:
        metadata = f.metadata()
        keys = list(f.keys())
    assert metadata["ss_network_module"] == "networks.lora"
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("4", "2")
    assert json.loads(metadata["ss_network_args"]) == {"conv_dim": "2", "conv_alpha": "1"}
    assert metadata["ss_base_model_version"] == "sd_v2" and metadata["ss_v2"] == "True"
    assert metadata["ss_output_name"] == "style" and metadata["ss_sd_model_name"] == "tiny-sd2"
    assert metadata["steps"] == "30"
    assert not any(key.startswith("lora_te_") for key in keys)  # the text encoder did not train


def test_plain_lora_has_no_conv_args(tiny_folders, tmp_path):
    models = trained_lora(tiny_folders["sd1"])
    path = export_kohya_lora(models.unet, models.text_encoder, tmp_path / "plain.safetensors")
    with safe_open(str(path), "pt") as f:
        assert "ss_network_args" not in f.metadata()
        assert f.metadata()["ss_base_model_version"] == "sd_v1"


def test_a_model_without_adapters_is_an_error(tiny_folders, tmp_path):
    models = load_models(tiny_folders["sd1"])
    with pytest.raises(ValueError, match="no LoRA layers"):
        export_kohya_lora(models.unet, models.text_encoder, tmp_path / "none.safetensors")
    assert not (tmp_path / "none.safetensors").exists()
