"""SD3 and FLUX exports, each loaded back by diffusers' own loaders: the LoRA files (diffusers/
PEFT for both, kohya for FLUX) must reproduce what the run trained, exactly, and the diffusers
folder of a full fine-tune must load with the trained transformer."""

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from edlib.export.run import export_run
from edlib.model.methods.lora import lora_config
from edlib.model.methods.lora_targets import transformer_lora_layers
from edlib.model.trained import load_trained
from edlib.sample.pipeline import pipeline_from_models
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401 - autouse fixture


def _latents(pipeline) -> torch.Tensor:
    """Two sampling steps, to latents: the transformer and text encoders with their adapters."""
    pipeline.set_progress_bar_config(disable=True)
    return pipeline(
        "a red cat", height=64, width=64, num_inference_steps=2, max_sequence_length=8,
        generator=torch.Generator().manual_seed(0), output_type="latent",
    ).images


def _train_lora(model: Path, tmp_path: Path, formats: list[str], **extra):
    settings = dict(
        method="lora", unet_lr=3e-2, text_encoder_lr=3e-2, network_dim=2, network_alpha=1.0, max_steps=3,
        max_sequence_length=8, export_formats=formats, export_dtype="fp32",
    )
    settings.update(extra)
    return train(tiny_config(model, make_data_root(tmp_path / "data"), tmp_path / "run", **settings))


def _pipeline_class(model: Path):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    return FluxPipeline if "flux" in Path(model).parent.name else StableDiffusion3Pipeline


def _assert_reproduces_the_run(model: Path, run: Path, lora_file: Path) -> None:
    pipeline_class = _pipeline_class(model)
    base = _latents(pipeline_class.from_pretrained(model))
    trained = _latents(pipeline_from_models(load_trained(run).models))
    loaded = pipeline_class.from_pretrained(model)
    loaded.load_lora_weights(str(lora_file))
    result = _latents(loaded)
    assert (result - base).abs().max() > 1e-2  # the LoRA changes the output ...
    torch.testing.assert_close(result, trained, rtol=1e-4, atol=1e-5)  # ... to exactly what the run trained


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_peft_lora_loads_in_diffusers_as_the_run_trained_it(family, tiny_flux, tiny_sd3, tmp_path):
    model = tiny_flux if family == "flux" else tiny_sd3
    summary = _train_lora(model, tmp_path, ["peft-lora"])
    (path,) = summary.exports
    with safe_open(str(path), framework="pt") as handle:
        keys, metadata = list(handle.keys()), handle.metadata()
    prefixes = {key.split(".")[0] for key in keys}
    # The transformer and the CLIP encoders that trained; never T5.
    assert prefixes == ({"transformer", "text_encoder"} if family == "flux" else {"transformer", "text_encoder", "text_encoder_2"})
    assert '"transformer.lora_alpha": 2' in metadata["lora_adapter_metadata"]  # alpha / rank folded into lora_B
    assert metadata["edlib_max_sequence_length"] == "8"
    _assert_reproduces_the_run(model, tmp_path / "run", path)


def _flux_without_single_blocks(tiny_flux, out: Path) -> Path:
    """diffusers' kohya-FLUX converter splits the single blocks' fused linear1 at FLUX.1's own
    widths (3072 x 3 + 12288), which no tiny model has; its double blocks it splits evenly."""
    from diffusers import FluxPipeline, FluxTransformer2DModel

    pipeline = FluxPipeline.from_pretrained(tiny_flux)
    pipeline.transformer = FluxTransformer2DModel.from_config({**pipeline.transformer.config, "num_single_layers": 0})
    pipeline.save_pretrained(out)
    return out


@pytest.mark.parametrize("targets", ["attention_ff", "all_linear"])
def test_kohya_flux_lora_loads_in_diffusers_as_the_run_trained_it(targets, tiny_flux, tmp_path):
    model = _flux_without_single_blocks(tiny_flux, tmp_path / "flux-double")
    summary = _train_lora(model, tmp_path, ["kohya-lora"], lora_targets=targets)
    (path,) = summary.exports
    tensors = load_file(str(path))
    # q, k and v as one fused qkv adapter of rank 3 x 2, its up matrix block diagonal.
    up = tensors["lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight"]
    assert up.shape == (3 * 32, 6) and tensors["lora_unet_double_blocks_0_img_attn_qkv.alpha"].item() == 3.0
    assert torch.count_nonzero(up[:32, 2:]) == 0 and torch.count_nonzero(up[32:64, :2]) == 0
    assert any(key.startswith("lora_te1_text_model_encoder_layers_0_") for key in tensors)
    with safe_open(str(path), framework="pt") as handle:
        assert handle.metadata()["ss_base_model_version"] == "flux1"
    _assert_reproduces_the_run(model, tmp_path / "run", path)


@pytest.mark.parametrize("targets", ["attention", "attention_ff"])
def test_kohya_flux_single_blocks_convert_back_exactly_at_flux_width(targets, tmp_path):
    """The single blocks at FLUX.1's width (built on the meta device: only the adapters hold
    numbers): diffusers' converter turns the fused linear1 back into q, k, v and proj_mlp
    adapters whose products are exactly ours (sparse or not, with a zero MLP part or not)."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft.tuners.lora import LoraLayer

    from edlib.export.flow_lora import kohya_flux_state_dict

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(
            in_channels=16, num_layers=0, num_single_layers=1, attention_head_dim=128, num_attention_heads=24,
            joint_attention_dim=32, pooled_projection_dim=16, axes_dims_rope=(16, 56, 56),
        )
    settings = SimpleNamespace(network_dim=2, network_alpha=1.0, conv_dim=None, conv_alpha=1.0)
    transformer.add_adapter(lora_config(transformer, (), settings, transformer_lora_layers(transformer, targets)))
    generator = torch.Generator().manual_seed(0)
    layers = {name: layer for name, layer in transformer.named_modules() if isinstance(layer, LoraLayer)}
    for layer in layers.values():
        for part in (layer.lora_A["default"], layer.lora_B["default"]):
            part.weight = torch.nn.Parameter(torch.randn(part.weight.shape, generator=generator))
    path = tmp_path / "wide.safetensors"
    save_file({k: v.contiguous() for k, v in kohya_flux_state_dict(transformer).items()}, str(path))
    converted = FluxPipeline.lora_state_dict(str(path))
    converted = converted[0] if isinstance(converted, tuple) else converted
    for name, layer in layers.items():
        ours = layer.lora_B["default"].weight @ layer.lora_A["default"].weight * 0.5  # alpha 1 / rank 2
        theirs = converted[f"transformer.{name}.lora_B.weight"] @ converted[f"transformer.{name}.lora_A.weight"]
        torch.testing.assert_close(theirs, ours)


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_full_fine_tune_exports_a_diffusers_folder(family, tiny_flux, tiny_sd3, tmp_path):
    model = tiny_flux if family == "flux" else tiny_sd3
    pipeline_class = _pipeline_class(model)
    settings = dict(method="full", unet_lr=1e-3, max_steps=2, max_sequence_length=8, export_dtype="fp32", text_encoder_lr=1e-3)
    summary = train(tiny_config(model, make_data_root(tmp_path / "data"), tmp_path / "run", **settings))
    (folder,) = summary.exports  # a full fine-tune of these ends as a diffusers folder by default
    assert folder.name.endswith("-diffusers")
    exported = pipeline_class.from_pretrained(folder)
    trained = load_trained(tmp_path / "run").models
    for name, module in (("transformer", trained.unet), ("text_encoder", trained.text_encoder)):
        saved = getattr(exported, name).state_dict()
        for key, value in module.state_dict().items():
            torch.testing.assert_close(saved[key], value)
    assert (_latents(exported) - _latents(pipeline_class.from_pretrained(model))).abs().max() > 0
    with pytest.raises(ValueError, match=f"single-file: not offered for {family.upper()}"):
        export_run(tmp_path / "run", "single-file")


def test_sd3_lora_ends_as_peft_and_refuses_kohya(tiny_sd3, tmp_path):
    summary = _train_lora(tiny_sd3, tmp_path, None, max_steps=1, text_encoder_lr=0.0)
    assert [p.name for p in summary.exports] == ["run-step000001-fp32-peft-lora.safetensors"]
    with pytest.raises(ValueError, match="ignores kohya-format SD3 LoRAs"):
        export_run(tmp_path / "run", "kohya-lora")
