"""SDXL exports: a StableDiffusionXLPipeline folder, a single file in SDXL's original layout
(``conditioner.embedders.0`` CLIP-L, ``.1`` OpenCLIP-G) and a kohya SDXL LoRA (``lora_unet_``
in the original UNet layout, ``lora_te1_``, ``lora_te2_``), each loaded back through diffusers'
own loaders on the tiny SDXL and computing what the exported model computes."""

import re
from types import SimpleNamespace

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, StableDiffusionXLPipeline, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

from edlib.export import export_diffusers, export_kohya_lora, export_single_file
from edlib.export.kohya_lora import kohya_state_dict
from edlib.export.single_file import original_state_dict
from edlib.model.architectures import SDXL_TEXT_ENCODER, SDXL_TEXT_ENCODER_2, SDXL_UNET, SDXL_VAE
from edlib.model.methods.lora import LoraMethod, adapter_parameters
from edlib.model.models import load_models
from tests.export.outputs import assert_same_outputs, component_outputs


def _load(folder):
    return StableDiffusionXLPipeline.from_pretrained(folder)


def _load_single(path, config_folder):
    return StableDiffusionXLPipeline.from_single_file(str(path), config=str(config_folder), local_files_only=True)


# --- diffusers folder ---


def test_diffusers_export_is_an_sdxl_folder_with_identical_outputs(tiny_sdxl, tmp_path):
    pipe = _load(tiny_sdxl)
    out = export_diffusers(
        pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler.config, tmp_path / "xl",
        text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2,
    )  # fmt: skip

    loaded = _load(out)
    assert type(loaded) is StableDiffusionXLPipeline
    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=0.0)
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    assert loaded.tokenizer_2("a red cat").input_ids == pipe.tokenizer_2("a red cat").input_ids


def test_fp16_diffusers_export_halves_both_text_encoders(tiny_sdxl, tmp_path):
    pipe = _load(tiny_sdxl)
    out = export_diffusers(
        pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, tmp_path / "xl", dtype="fp16",
        text_encoder_2=pipe.text_encoder_2, tokenizer_2=pipe.tokenizer_2,
    )  # fmt: skip
    for weights in out.rglob("*.safetensors"):
        with safe_open(weights, "pt") as handle:
            assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}, weights
    assert {p.parent.name for p in out.rglob("*.safetensors")} == {"unet", "vae", "text_encoder", "text_encoder_2"}
    loaded = StableDiffusionXLPipeline.from_pretrained(out, torch_dtype=torch.float32)
    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=2e-3)
    assert pipe.text_encoder_2.dtype == torch.float32


def test_a_second_text_encoder_without_its_tokenizer_is_an_error(tiny_sdxl, tmp_path):
    pipe = _load(tiny_sdxl)
    with pytest.raises(ValueError, match="text_encoder_2 and tokenizer_2"):
        export_diffusers(
            pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer, pipe.scheduler, tmp_path / "x",
            text_encoder_2=pipe.text_encoder_2,
        )  # fmt: skip
    assert list(tmp_path.iterdir()) == []


# --- single file ---


@pytest.mark.parametrize(("dtype", "rtol"), [("fp32", 1e-5), ("fp16", 2e-3)])
def test_single_file_loads_back_with_from_single_file(tiny_sdxl, tmp_path, dtype, rtol):
    pipe = _load(tiny_sdxl)
    path = export_single_file(
        pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "xl.safetensors", dtype=dtype, text_encoder_2=pipe.text_encoder_2
    )
    with safe_open(str(path), "pt") as handle:
        assert handle.metadata()["edlib_variant"] == "sdxl"

    loaded = _load_single(path, tiny_sdxl)
    assert type(loaded) is StableDiffusionXLPipeline
    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=rtol)
    if dtype == "fp32":
        for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
            original, back = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
            assert original.keys() == back.keys(), name
            assert all(torch.equal(original[key], back[key]) for key in original), name


def test_single_file_keys_are_sdxls_original_layout(tiny_sdxl):
    pipe = _load(tiny_sdxl)
    checkpoint = original_state_dict(pipe.unet, pipe.vae, pipe.text_encoder, variant="sdxl", text_encoder_2=pipe.text_encoder_2)
    prefixes = ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.text_model.", "conditioner.embedders.1.model.")
    assert all(key.startswith(prefixes) for key in checkpoint)
    # the added (pooled text + micro-conditioning) embedding, and OpenCLIP's projection stored
    # as [width, projection] (OpenCLIP multiplies x @ text_projection)
    assert torch.equal(checkpoint["model.diffusion_model.label_emb.0.0.weight"], pipe.unet.add_embedding.linear_1.weight)
    assert torch.equal(checkpoint["model.diffusion_model.label_emb.0.2.bias"], pipe.unet.add_embedding.linear_2.bias)
    assert torch.equal(checkpoint["conditioner.embedders.1.model.text_projection"], pipe.text_encoder_2.text_projection.weight.T)
    assert checkpoint["conditioner.embedders.1.model.text_projection"].shape == (48, 40)
    assert checkpoint["conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight"].shape == (3 * 48, 48)
    assert checkpoint["conditioner.embedders.0.transformer.text_model.final_layer_norm.weight"].shape == (32,)
    assert not any(key.startswith("cond_stage_model.") for key in checkpoint)


def test_variant_and_text_encoders_must_agree(tiny_sdxl, tmp_path):
    pipe = _load(tiny_sdxl)
    with pytest.raises(ValueError, match="SDXL needs text_encoder_2"):
        export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "x.safetensors", variant="sdxl")
    with pytest.raises(ValueError, match="variant 'sd1'"):
        export_single_file(
            pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "x.safetensors", variant="sd1", text_encoder_2=pipe.text_encoder_2
        )
    assert list(tmp_path.iterdir()) == []


def test_real_sdxl_architecture_maps_to_the_original_key_set():
    with init_empty_weights():
        # The published SDXL base 1.0 architecture on the meta device (no memory, no weights).
        unet = UNet2DConditionModel(**SDXL_UNET)
        vae = AutoencoderKL(**SDXL_VAE)
        clip_l = CLIPTextModel(CLIPTextConfig(**SDXL_TEXT_ENCODER))
        clip_g = CLIPTextModelWithProjection(CLIPTextConfig(**SDXL_TEXT_ENCODER_2))
    checkpoint = original_state_dict(unet, vae, clip_l, variant="sdxl", text_encoder_2=clip_g)

    def count(prefix):
        return sum(key.startswith(prefix) for key in checkpoint)

    # sd_xl_base_1.0.safetensors holds 1680 UNet, 248 VAE, 197 CLIP-L and 390 OpenCLIP-G
    # tensors; one of the CLIP-L ones is its position_ids buffer and one of the OpenCLIP-G
    # ones its logit_scale, which no loader reads (text models have no use for them).
    assert count("model.diffusion_model.") == 1680
    assert count("first_stage_model.") == 248
    assert count("conditioner.embedders.0.transformer.text_model.") == 196
    assert count("conditioner.embedders.1.model.") == 389
    expected_shapes = {
        "model.diffusion_model.label_emb.0.0.weight": (1280, 2816),
        "model.diffusion_model.input_blocks.4.1.transformer_blocks.1.attn2.to_k.weight": (640, 2048),
        "model.diffusion_model.input_blocks.7.1.transformer_blocks.9.ff.net.2.weight": (1280, 5120),
        "model.diffusion_model.middle_block.1.transformer_blocks.9.attn1.to_q.weight": (1280, 1280),
        "model.diffusion_model.output_blocks.2.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (640, 640, 3, 3),
        "conditioner.embedders.1.model.text_projection": (1280, 1280),
        "conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight": (3840, 1280),
        "conditioner.embedders.1.model.positional_embedding": (77, 1280),
        "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight": (768, 3072),
    }
    assert {key: tuple(checkpoint[key].shape) for key in expected_shapes} == expected_shapes

    # diffusers' own detector takes it for SDXL base and its converters map every key back.
    assert single_file_utils.infer_diffusers_model_type(checkpoint) == "xl_base"
    unet_back = single_file_utils.convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    assert unet_back.keys() == unet.state_dict().keys()
    clip_l_back = single_file_utils.convert_ldm_clip_checkpoint(checkpoint)
    assert {key.removeprefix("text_model.") for key in clip_l_back} == set(clip_l.state_dict())
    clip_g_back = single_file_utils.convert_open_clip_checkpoint(clip_g, checkpoint, prefix="conditioner.embedders.1.model.")
    assert set(clip_g_back) == set(clip_g.state_dict())


# --- kohya LoRA ---

_TENSOR = r"\.(lora_down\.weight|lora_up\.weight|alpha)$"
_ATTENTION_LEVEL = r"(input_blocks_\d+_1|middle_block_1|output_blocks_\d+_1)"
_RESNET = r"(input_blocks_\d+_0|middle_block_[02]|output_blocks_\d+_0)"
# kohya's SDXL names: the original UNet layout, te1 (CLIP-L) and te2 (OpenCLIP-G).
SDXL_KOHYA_PATTERNS = {
    "attention": rf"^lora_unet_{_ATTENTION_LEVEL}_transformer_blocks_\d+_attn[12]_(to_q|to_k|to_v|to_out_0){_TENSOR}",
    "feed_forward": rf"^lora_unet_{_ATTENTION_LEVEL}_transformer_blocks_\d+_ff_net_(0_proj|2){_TENSOR}",
    "projection": rf"^lora_unet_{_ATTENTION_LEVEL}_(proj_in|proj_out){_TENSOR}",
    "resnet_conv": rf"^lora_unet_{_RESNET}_(in_layers_2|out_layers_3){_TENSOR}",
    "resnet_linear": rf"^lora_unet_{_RESNET}_(skip_connection|emb_layers_1){_TENSOR}",
    "sampler_conv": rf"^lora_unet_(input_blocks_\d+_0_op|output_blocks_\d+_[12]_conv){_TENSOR}",
    "te1_attention": rf"^lora_te1_text_model_encoder_layers_\d+_self_attn_(q_proj|k_proj|v_proj|out_proj){_TENSOR}",
    "te1_mlp": rf"^lora_te1_text_model_encoder_layers_\d+_mlp_(fc1|fc2){_TENSOR}",
    "te2_attention": rf"^lora_te2_text_model_encoder_layers_\d+_self_attn_(q_proj|k_proj|v_proj|out_proj){_TENSOR}",
    "te2_mlp": rf"^lora_te2_text_model_encoder_layers_\d+_mlp_(fc1|fc2){_TENSOR}",
}


def trained_sdxl_lora(folder, **settings):
    """The tiny SDXL with LoRA adapters on the UNet and both text encoders, set to random
    values (standing for trained ones: lora_up starts at zero, which would prove nothing)."""
    values = dict(network_dim=4, network_alpha=2.0, conv_dim=None, conv_alpha=1.0)
    values.update(unet_lr=1e-4, text_encoder_lr=1e-4, text_encoder_2_lr=None, mixed_precision="no")
    values.update(settings)
    models = load_models(folder)
    LoraMethod(SimpleNamespace(**values)).setup(models)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for module in (models.unet, models.text_encoder, models.text_encoder_2):
            for param in adapter_parameters(module).values():
                param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
    return models


def test_every_sdxl_key_follows_kohyas_sdxl_pattern_of_its_module_type(tiny_sdxl):
    models = trained_sdxl_lora(tiny_sdxl, conv_dim=2, conv_alpha=1.0)
    tensors = kohya_state_dict(models.unet, models.text_encoder, models.text_encoder_2)
    matched = {kind: 0 for kind in SDXL_KOHYA_PATTERNS}
    for key in tensors:
        kinds = [kind for kind, pattern in SDXL_KOHYA_PATTERNS.items() if re.match(pattern, key)]
        assert len(kinds) == 1, f"{key} matches {kinds or 'no kohya SDXL pattern'}"
        matched[kinds[0]] += 1
    assert all(matched.values()), f"module types with no keys: {[k for k, n in matched.items() if not n]}"
    # tiny SDXL: input_blocks 1 = first level's ResNet, 2 its downsampler, 3 the attention level
    assert tensors["lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight"].shape == (2, 32, 3, 3)
    assert "lora_unet_input_blocks_2_0_op.lora_up.weight" in tensors
    assert "lora_unet_input_blocks_3_1_transformer_blocks_1_attn2_to_k.alpha" in tensors
    assert "lora_unet_output_blocks_1_2_conv.lora_down.weight" in tensors
    # each text encoder's adapters have its own width: te1 is 32 wide, te2 48
    assert tensors["lora_te1_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"].shape == (4, 32)
    assert tensors["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight"].shape == (4, 48)


@pytest.mark.parametrize(("dtype", "rtol"), [("fp32", 1e-5), ("fp16", 5e-3)])
def test_diffusers_loads_the_sdxl_lora_and_computes_the_same(tiny_sdxl, tmp_path, dtype, rtol):
    models = trained_sdxl_lora(tiny_sdxl, conv_dim=2, conv_alpha=1.0)
    expected = component_outputs(models)
    path = export_kohya_lora(
        models.unet, models.text_encoder, tmp_path / "xl lora.safetensors", dtype=dtype,
        base_model="tiny-sdxl", text_encoder_2=models.text_encoder_2,
    )  # fmt: skip

    pipe = _load(tiny_sdxl)
    base = component_outputs(pipe)
    pipe.load_lora_weights(str(path))
    actual = component_outputs(pipe)
    assert_same_outputs(expected, actual, rtol=rtol)
    # and each adapted part computes something else than the base
    for name in ("unet", "text_encoder", "text_encoder_2", "text_encoder_2_pooled"):
        assert not torch.allclose(base[name], expected[name], rtol=1e-3), name


def test_sdxl_lora_metadata_names_the_base_model(tiny_sdxl, tmp_path):
    models = trained_sdxl_lora(tiny_sdxl, text_encoder_lr=0.0)
    path = export_kohya_lora(
        models.unet, models.text_encoder, tmp_path / "u.safetensors", base_model="stabilityai/sdxl", text_encoder_2=models.text_encoder_2
    )
    with safe_open(str(path), "pt") as f:
        metadata, keys = f.metadata(), list(f.keys())
    assert metadata["ss_base_model_version"] == "sdxl_base_v1-0" and metadata["ss_v2"] == "False"
    assert metadata["ss_sd_model_name"] == "stabilityai/sdxl"
    assert (metadata["ss_network_dim"], metadata["ss_network_alpha"]) == ("4", "2")
    assert keys and all(key.startswith("lora_unet_") for key in keys)  # the text encoders did not train
