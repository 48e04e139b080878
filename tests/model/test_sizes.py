"""The model in hand (issue 19): its parameter counts read from file headers, the starting
values that fit it (resolution, learning rates), and estimates sized by it, with a CPU row
that needs no GPU's precision penalty."""

from pathlib import Path

import pytest
from diffusers import AutoencoderKL, UNet2DConditionModel
from transformers import CLIPTextModel

from edlib.export.single_file import export_single_file
from edlib.model.config import DEFAULT_RESOLUTION, TrainConfig
from edlib.model.estimate import CPU, CPU_MEASURED, DEVICES, FAMILIES, estimate_memory, estimate_time, throughput
from edlib.model.identify import native_resolution
from edlib.model.sizes import ModelSize, header_shapes, model_size
from edlib.model.suggest import METHOD_LRS, SMALL_FULL_LRS, suggested_learning_rates, suggested_resolution

WORLD = "edlib:world"
SD15 = "stable-diffusion-v1-5/stable-diffusion-v1-5"  # not in the test machine's hub cache


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def _modules(folder: Path):
    return (
        UNet2DConditionModel.from_pretrained(folder, subfolder="unet"),
        AutoencoderKL.from_pretrained(folder, subfolder="vae"),
        CLIPTextModel.from_pretrained(folder, subfolder="text_encoder"),
    )


def test_counts_from_headers_match_the_loaded_modules(tiny_sd1, tmp_path):
    unet, vae, text_encoder = _modules(tiny_sd1)
    assert model_size(tiny_sd1) == ModelSize(_count(unet), _count(text_encoder), _count(vae))
    # The same model as one file in the original layout: its parts by key prefix.
    single = export_single_file(unet, vae, text_encoder, tmp_path / "tiny.safetensors", dtype="fp32")
    from_file = model_size(single)
    assert from_file.denoiser == _count(unet) and from_file.vae == _count(vae)
    assert from_file.text_encoders >= _count(text_encoder) - 1000  # position ids are a buffer in one layout

    world = model_size(WORLD)
    assert world.denoiser == CPU_MEASURED["unet_params"] == 5_029_732  # the estimate's CPU row is this model
    assert model_size(SD15) is None and model_size(tmp_path / "nothing") is None and model_size("edlib:nope") is None


def test_a_damaged_header_is_no_size(tmp_path, tiny_sd1):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="not a safetensors file"):
        header_shapes(bad)
    assert model_size(bad) is None


def test_starting_values_follow_the_model(tiny_sd1):
    assert suggested_resolution(WORLD) == 64
    assert suggested_resolution(SD15) == DEFAULT_RESOLUTION  # not readable offline: the config's rule
    native = native_resolution(tiny_sd1)  # read from its configs (64 for the tiny test model)
    assert native == 64 and suggested_resolution(tiny_sd1) == 64
    assert suggested_learning_rates("full", WORLD) == SMALL_FULL_LRS == (3e-4, 3e-4)
    assert suggested_learning_rates("full", SD15) == METHOD_LRS["full"] == (1e-6, 0.0)
    for method in ("lora", "textual_inversion"):
        assert suggested_learning_rates(method, WORLD) == suggested_learning_rates(method, SD15) == METHOD_LRS[method]
    with pytest.raises(ValueError, match="method 'dreambooth'"):
        suggested_learning_rates("dreambooth", WORLD)


def _world(**values) -> TrainConfig:
    base = {"model": WORLD, "data_root": "data", "resolution": 64, "batch_size": 4, "unet_lr": 3e-4, "text_encoder_lr": 3e-4, "cache_latents": "memory"}
    return TrainConfig.from_dict({**base, **values})


def test_the_estimate_is_for_the_model_in_hand_and_the_device_it_runs_on():
    config = _world()
    # The CPU row is measured with exactly these settings: no factor, no fp32 penalty.
    cpu = throughput(config, CPU)
    assert cpu.measured and cpu.images_per_s == CPU_MEASURED["images_per_s"] and "fp32 instead of bf16" not in cpu.basis
    assert estimate_time(config, 100, CPU).seconds == pytest.approx(100 * 4 / CPU_MEASURED["images_per_s"])
    assert estimate_time(config, 100, CPU).cost == 0.0  # your own machine: type a price if it has one
    # At 128 px a quarter of the rate; LoRA by the H100 rows' ratio.
    assert throughput(_world(resolution=128), CPU).images_per_s == pytest.approx(CPU_MEASURED["images_per_s"] / 4)
    assert "LoRA" in throughput(_world(method="lora", unet_lr=1e-4, text_encoder_lr=0), CPU).basis

    # Memory: the world model's own parameter counts, not SD1.5's 23 GiB; in RAM on the CPU.
    on_gpu, on_cpu = estimate_memory(config), estimate_memory(config, device=CPU)
    assert on_gpu.total_gib < 1.2 and "edlib:world (5.03M UNet parameters)" in on_gpu.describe()
    assert "SD1.5" in on_gpu.describe() and "scaled" in on_gpu.describe()  # says what it is scaled from
    assert "CUDA context" not in on_cpu.parts and on_cpu.fits(CPU) and DEVICES[CPU].memory_gib > 1
    # A GPU row for it is scaled from SD1.5's by parameter count, and says how far it is.
    gpu = throughput(config)
    assert not gpu.measured and "edlib:world (5.03M UNet parameters) instead of SD1.5's" in gpu.basis
    assert "likely optimistic" in gpu.basis
    # A model of the family's own size keeps the family's measured figures.
    assert estimate_memory(_world(model=SD15, resolution=512)).describe().endswith("for SD1.5; rough, +-30%")
    sd_cpu = throughput(_world(model=SD15, resolution=512), CPU)
    assert not sd_cpu.measured and "likely pessimistic" in sd_cpu.basis
    assert sd_cpu.images_per_s == pytest.approx(
        CPU_MEASURED["images_per_s"] * CPU_MEASURED["unet_params"] / FAMILIES["sd15"].unet_params / 64
    )
