"""Single-file export: the original SD key layout that A1111, ComfyUI and diffusers'
``from_single_file`` load, checked by loading it back with diffusers' own loader."""

import json

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from diffusers.loaders import single_file_utils
from safetensors import safe_open
from transformers import CLIPTextConfig, CLIPTextModel

import edlib
from edlib.export import export_single_file, single_file
from edlib.export.single_file import original_state_dict
from edlib.model.architectures import (
    SD2_TEXT_ENCODER,
    SD2_UNET,
    SD15_TEXT_ENCODER,
    SD15_UNET,
    SD_VAE,
)
from tests.export.outputs import assert_same_outputs, component_outputs


def _load(folder):
    return StableDiffusionPipeline.from_pretrained(folder)


def _load_single(path, config_folder):
    return StableDiffusionPipeline.from_single_file(path, config=str(config_folder), local_files_only=True)


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_fp32_export_loads_back_with_from_single_file_and_identical_outputs(tiny_folders, tmp_path, variant):
    pipe = _load(tiny_folders[variant])
    models = (pipe.unet, pipe.vae, pipe.text_encoder)
    path = export_single_file(*models, tmp_path / "model.safetensors", dtype="fp32")

    loaded = _load_single(path, tiny_folders[variant])

    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=1e-5)
    for name in ("unet", "vae", "text_encoder"):
        original, back = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
        assert original.keys() == back.keys()
        assert all(torch.equal(original[key], back[key]) for key in original), name
    # The scheduler comes from the config folder, so SD2's v-prediction survives.
    assert loaded.scheduler.config.prediction_type == pipe.scheduler.config.prediction_type


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_fp16_export_is_half_the_size_and_matches_within_fp16_tolerance(tiny_folders, tmp_path, variant):
    pipe = _load(tiny_folders[variant])
    before = {key: value.clone() for key, value in pipe.unet.state_dict().items()}
    fp32 = export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "a.safetensors", dtype="fp32")
    fp16 = export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "b.safetensors", dtype="fp16")

    with safe_open(fp16, "pt") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}
    assert fp16.stat().st_size < 0.55 * fp32.stat().st_size
    loaded = _load_single(fp16, tiny_folders[variant])
    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=2e-3)
    # Exporting copies: the trainer's model keeps its fp32 weights, bit for bit.
    assert pipe.unet.dtype == torch.float32
    assert all(torch.equal(before[key], value) for key, value in pipe.unet.state_dict().items())


def test_metadata_is_stored_as_strings_with_the_edlib_version(tiny_folders, tmp_path):
    pipe = _load(tiny_folders["sd1"])
    info = {"base_model": "runwayml/stable-diffusion-v1-5", "training": {"steps": 1200, "lr": 1e-6}}
    path = export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "m.safetensors", metadata=info)

    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
    assert metadata["edlib_version"] == edlib.__version__
    assert metadata["edlib_variant"] == "sd1" and metadata["edlib_dtype"] == "fp16"
    assert metadata["base_model"] == "runwayml/stable-diffusion-v1-5"
    assert json.loads(metadata["training"]) == {"steps": 1200, "lr": 1e-6}


def test_variant_is_read_from_the_text_encoder(tiny_folders):
    assert single_file.infer_variant(_load(tiny_folders["sd1"]).text_encoder) == "sd1"
    assert single_file.infer_variant(_load(tiny_folders["sd2"]).text_encoder) == "sd2"


def test_a_failed_write_leaves_the_previous_file_and_no_partial_file(tiny_folders, tmp_path, monkeypatch):
    pipe = _load(tiny_folders["sd1"])
    path = export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, tmp_path / "model.safetensors")
    previous = path.read_bytes()

    def disk_full(tensors, filename, metadata=None):
        with open(filename, "wb") as handle:  # half a file, then the disk is full
            handle.write(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(single_file, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export_single_file(pipe.unet, pipe.vae, pipe.text_encoder, path)
    assert path.read_bytes() == previous
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_bad_options_are_errors_that_say_what_is_allowed(tiny_folders, tmp_path):
    pipe = _load(tiny_folders["sd1"])
    models = (pipe.unet, pipe.vae, pipe.text_encoder)
    with pytest.raises(ValueError, match="dtype.*'int8'.*fp16, fp32"):
        export_single_file(*models, tmp_path / "m.safetensors", dtype="int8")
    with pytest.raises(ValueError, match=r"m\.ckpt.*\.safetensors"):
        export_single_file(*models, tmp_path / "m.ckpt")
    with pytest.raises(ValueError, match="variant.*'sd3'.*sd1, sd2, sdxl"):
        export_single_file(*models, tmp_path / "m.safetensors", variant="sd3")
    assert list(tmp_path.iterdir()) == []


def test_a_weight_with_no_original_name_is_an_error_naming_it(tiny_folders, tmp_path):
    pipe = _load(tiny_folders["sd1"])
    # A UNet with a class embedding (as in SD upscalers) has weights SD1/SD2 checkpoints lack.
    unet = UNet2DConditionModel.from_config({**pipe.unet.config, "class_embed_type": "timestep"})
    with pytest.raises(ValueError, match="UNet: weight 'class_embedding.linear_1.weight'"):
        export_single_file(unet, pipe.vae, pipe.text_encoder, tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


# --- the real SD1.5 / SD2.x architectures, built on the meta device (no memory, no weights) ---


def _real_checkpoint(unet_config, clip_config, variant):
    with init_empty_weights():
        unet = UNet2DConditionModel(**unet_config)
        vae = AutoencoderKL(**SD_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**clip_config))
    return (unet, vae, text_encoder), original_state_dict(unet, vae, text_encoder, variant=variant)


def _count(checkpoint, prefix):
    return sum(key.startswith(prefix) for key in checkpoint)


def test_real_sd15_architecture_maps_to_the_original_key_set():
    (unet, vae, text_encoder), checkpoint = _real_checkpoint(SD15_UNET, SD15_TEXT_ENCODER, "sd1")

    # The counts of the original SD1.5 checkpoint (v1-5-pruned): 686 UNet, 248 VAE and
    # 196 CLIP weights (plus its position_ids buffer, which is not a weight).
    assert _count(checkpoint, "model.diffusion_model.") == 686
    assert _count(checkpoint, "first_stage_model.") == 248
    assert _count(checkpoint, "cond_stage_model.transformer.text_model.") == 196
    assert len(checkpoint) == 686 + 248 + 196
    expected_shapes = {
        "model.diffusion_model.time_embed.0.weight": (1280, 320),
        "model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
        "model.diffusion_model.input_blocks.1.0.in_layers.0.weight": (320,),
        "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight": (320, 320),
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320, 1, 1),
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.input_blocks.8.1.transformer_blocks.0.attn2.to_k.weight": (1280, 768),
        "model.diffusion_model.input_blocks.9.0.op.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.input_blocks.11.0.emb_layers.1.weight": (1280, 1280),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.middle_block.2.out_layers.3.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.8.2.conv.weight": (640, 640, 3, 3),
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.0.proj.weight": (2560, 320),
        "model.diffusion_model.output_blocks.11.0.skip_connection.weight": (320, 640, 1, 1),
        "model.diffusion_model.out.2.weight": (4, 320, 3, 3),
        "first_stage_model.encoder.down.0.block.0.conv1.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.down.0.downsample.conv.weight": (128, 128, 3, 3),
        "first_stage_model.encoder.down.1.block.0.nin_shortcut.weight": (256, 128, 1, 1),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.encoder.norm_out.weight": (512,),
        "first_stage_model.decoder.up.3.upsample.conv.weight": (512, 512, 3, 3),
        "first_stage_model.decoder.up.0.block.2.conv2.weight": (128, 128, 3, 3),
        "first_stage_model.decoder.up.1.block.0.nin_shortcut.weight": (256, 512, 1, 1),
        "first_stage_model.decoder.mid.attn_1.proj_out.weight": (512, 512, 1, 1),
        "first_stage_model.quant_conv.weight": (8, 8, 1, 1),
        "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": (768, 768),
        "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight": (49408, 768),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    }
    assert {key: tuple(checkpoint[key].shape) for key in expected_shapes} == expected_shapes
    # Levels without a downsampler / upsampler have none in the original either.
    assert "model.diffusion_model.input_blocks.12.0.op.weight" not in checkpoint
    assert "first_stage_model.encoder.down.3.downsample.conv.weight" not in checkpoint
    assert "first_stage_model.decoder.up.0.upsample.conv.weight" not in checkpoint

    # diffusers' own detector takes it for SD1 and its converters map every key back.
    assert single_file_utils.infer_diffusers_model_type(checkpoint) == "v1"
    unet_back = single_file_utils.convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    vae_back = single_file_utils.convert_ldm_vae_checkpoint(checkpoint, dict(vae.config))
    clip_back = single_file_utils.convert_ldm_clip_checkpoint(checkpoint)
    assert unet_back.keys() == unet.state_dict().keys()
    assert vae_back.keys() == vae.state_dict().keys()
    assert {key.removeprefix("text_model.") for key in clip_back} == set(text_encoder.state_dict())


def test_real_sd2_architecture_maps_to_the_openclip_layout():
    (unet, vae, text_encoder), checkpoint = _real_checkpoint(SD2_UNET, SD2_TEXT_ENCODER, "sd2")

    assert _count(checkpoint, "model.diffusion_model.") == 686
    assert _count(checkpoint, "first_stage_model.") == 248
    # 23 layers x 12 tensors (fused q/k/v) + token and positional embedding + final norm.
    assert _count(checkpoint, "cond_stage_model.model.") == 23 * 12 + 4
    expected_shapes = {
        "model.diffusion_model.input_blocks.1.1.proj_in.weight": (320, 320),  # linear in SD2
        "model.diffusion_model.input_blocks.2.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024),
        "cond_stage_model.model.token_embedding.weight": (49408, 1024),
        "cond_stage_model.model.positional_embedding": (77, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight": (3072, 1024),
        "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_bias": (3072,),
        "cond_stage_model.model.transformer.resblocks.22.attn.out_proj.weight": (1024, 1024),
        "cond_stage_model.model.transformer.resblocks.22.mlp.c_fc.weight": (4096, 1024),
        "cond_stage_model.model.transformer.resblocks.22.mlp.c_proj.bias": (1024,),
        "cond_stage_model.model.transformer.resblocks.22.ln_2.weight": (1024,),
        "cond_stage_model.model.ln_final.bias": (1024,),
    }
    assert {key: tuple(checkpoint[key].shape) for key in expected_shapes} == expected_shapes

    assert single_file_utils.infer_diffusers_model_type(checkpoint) == "v2"
    clip_back = single_file_utils.convert_open_clip_checkpoint(text_encoder, checkpoint)
    assert {key.removeprefix("text_model.") for key in clip_back} == set(text_encoder.state_dict())
    unet_back = single_file_utils.convert_ldm_unet_checkpoint(checkpoint, dict(unet.config))
    assert unet_back.keys() == unet.state_dict().keys()


def test_the_base_model_is_a_hub_id_or_a_file_name_never_a_local_path(tmp_path):
    from edlib.export.run import base_model_name

    assert base_model_name("stable-diffusion-v1-5/stable-diffusion-v1-5") == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert base_model_name("/content/drive/MyDrive/models/dreamshaper_8.safetensors") == "dreamshaper_8.safetensors"
    assert base_model_name(r"C:\Users\me\models\sd15.ckpt") == "sd15.ckpt"
    assert base_model_name("~/models/my-sd/") == "my-sd"
    assert base_model_name("models/sub/sd15") == "sd15"  # deeper than owner/name: a path
    local = tmp_path / "owner" / "model"
    local.mkdir(parents=True)
    assert base_model_name(str(local)) == "model"
