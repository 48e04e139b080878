"""Sampling SD3 and FLUX models and runs: Euler on the flow (what Forge and ComfyUI call Euler
/ simple), Forge's PNG parameters, FLUX's embedded guidance, the run's T5 length, and runs
whose base is kept in bf16 (or fp8) beside fp32 adapters."""

import logging

import pytest
import torch

from edlib.sample.from_model import sample_model
from edlib.sample.generate import sample_images
from edlib.sample.pipeline import load_pipeline, pipeline_from_checkpoint
from edlib.sample.pngmeta import parse_parameters, read_parameters
from edlib.sample.prompts import PromptSpec
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401 - autouse fixture


def test_flux_samples_with_euler_and_writes_forges_parameters(tiny_flux, tmp_path, caplog):
    pipeline = load_pipeline(tiny_flux)
    specs = [PromptSpec("a red cat", steps=2, width=64, height=64, sampler="DPM++ 2M Karras", seed=3)]
    with caplog.at_level(logging.WARNING, logger="edlib.sample"):
        (path,) = sample_images(pipeline, specs, tmp_path)
    text = read_parameters(path)
    assert text.splitlines()[-1] == "Steps: 2, Sampler: Euler, CFG scale: 1, Seed: 3, Size: 64x64, Schedule type: Simple, Distilled CFG Scale: 3.5"
    assert "SD3 and FLUX models sample with Euler" in caplog.text
    read_back = parse_parameters(text)
    assert read_back["cfg_scale"] == 3.5 and read_back["sampler"] == "Euler"
    # The same settings read back give the same image.
    (again,) = sample_images(pipeline, [PromptSpec("a red cat", steps=2, width=64, height=64, seed=3, cfg_scale=3.5, sampler="Euler")], tmp_path / "again")
    from PIL import Image

    assert Image.open(path).tobytes() == Image.open(again).tobytes()


def test_sd3_samples_with_its_cfg_default_and_clip_skip(tiny_sd3, tmp_path):
    pipeline = load_pipeline(tiny_sd3)
    (first,) = sample_images(pipeline, [PromptSpec("a red cat", steps=2, width=64, height=64)], tmp_path / "a")
    (second,) = sample_images(pipeline, [PromptSpec("a red cat", steps=2, width=64, height=64, clip_skip=2)], tmp_path / "b")
    assert "CFG scale: 4.5" in read_parameters(first) and "Clip skip: 2" in read_parameters(second)
    from PIL import Image

    assert Image.open(first).tobytes() != Image.open(second).tobytes()  # clip_skip reaches the encoders


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_a_bf16_lora_run_samples_after_training(family, tiny_flux, tiny_sd3, tmp_path):
    """The run's base is bf16 (FLUX: fp8 storage) beside fp32 adapters: `edlib sample RUN`
    samples under the run's autocast, with the run's T5 length."""
    model = tiny_flux if family == "flux" else tiny_sd3
    extra = {"fp8_base": True} if family == "flux" else {}
    config = tiny_config(
        model, make_data_root(tmp_path / "data"), tmp_path / "run", method="lora", mixed_precision="bf16", max_steps=1,
        max_sequence_length=8, export_formats=[], **extra,
    )
    train(config)
    pipeline = pipeline_from_checkpoint(tmp_path / "run")
    assert pipeline.edlib_max_sequence_length == 8 and pipeline.edlib_autocast_dtype == torch.bfloat16
    (path,) = sample_model(tmp_path / "run", [PromptSpec("a red cat", steps=2, width=64, height=64)])
    assert "Model: run step-000001" in read_parameters(path)


def test_an_sd_lora_run_in_bf16_samples_after_training(tiny_sd1, tmp_path):
    """The same for SD (this failed before: fp32 inputs met the bf16 UNet)."""
    train(tiny_config(tiny_sd1, make_data_root(tmp_path / "data"), tmp_path / "run", method="lora", mixed_precision="bf16", max_steps=1, export_formats=[]))
    (path,) = sample_model(tmp_path / "run", [PromptSpec("a red cat", steps=2, width=64, height=64)])
    assert path.is_file()
