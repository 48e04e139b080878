"""Diffusers-folder export: ``from_pretrained`` loads it and it computes what the model did."""

import pytest
import torch
from diffusers import StableDiffusionPipeline
from safetensors import safe_open

from edlib.export import export_diffusers
from tests.export.outputs import assert_same_outputs, component_outputs


def _export(pipe, out_dir, scheduler=None, **options):
    scheduler = pipe.scheduler.config if scheduler is None else scheduler
    models = (pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer)
    return export_diffusers(*models, scheduler, out_dir, **options)


@pytest.mark.parametrize("variant", ["sd1", "sd2"])
def test_export_loads_with_from_pretrained_and_gives_identical_outputs(tiny_folders, tmp_path, variant):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders[variant])
    out = _export(pipe, tmp_path / "exports" / "diffusers")

    loaded = StableDiffusionPipeline.from_pretrained(out)

    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=0.0)
    assert type(loaded.scheduler) is type(pipe.scheduler)
    assert dict(loaded.scheduler.config) == dict(pipe.scheduler.config)
    assert loaded.tokenizer("a red cat").input_ids == pipe.tokenizer("a red cat").input_ids
    assert loaded.safety_checker is None
    assert sorted(p.name for p in out.parent.iterdir()) == ["diffusers"]  # no temporary folder left


def test_fp16_export_stores_half_weights_and_leaves_the_model_alone(tiny_folders, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders["sd1"])
    before = {key: value.clone() for key, value in pipe.unet.state_dict().items()}
    out = _export(pipe, tmp_path / "fp16", dtype="fp16")

    for weights in out.rglob("*.safetensors"):
        with safe_open(weights, "pt") as handle:
            assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F16"}, weights
    loaded = StableDiffusionPipeline.from_pretrained(out, torch_dtype=torch.float32)
    assert_same_outputs(component_outputs(pipe), component_outputs(loaded), rtol=2e-3)
    assert pipe.unet.dtype == pipe.text_encoder.dtype == torch.float32
    assert pipe.text_encoder.config.dtype == torch.float32  # saving fp16 did not touch its config
    assert all(torch.equal(before[key], value) for key, value in pipe.unet.state_dict().items())


def test_a_scheduler_object_works_as_well_as_its_config(tiny_folders, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders["sd2"])
    loaded = StableDiffusionPipeline.from_pretrained(_export(pipe, tmp_path / "out", scheduler=pipe.scheduler))
    assert loaded.scheduler.config.prediction_type == "v_prediction"


def test_a_previous_export_is_replaced_but_other_folders_are_refused(tiny_folders, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders["sd1"])
    out = _export(pipe, tmp_path / "model")
    (out / "stale.txt").write_text("from the previous export")
    _export(pipe, out)
    assert not (out / "stale.txt").exists()
    assert (out / "model_index.json").exists()

    user_folder = tmp_path / "my images"
    user_folder.mkdir()
    (user_folder / "cat.png").write_bytes(b"not touched")
    with pytest.raises(FileExistsError, match="my images.*not a diffusers export"):
        _export(pipe, user_folder)
    assert [p.name for p in user_folder.iterdir()] == ["cat.png"]
    assert (user_folder / "cat.png").read_bytes() == b"not touched"


def test_bad_options_are_clear_errors(tiny_folders, tmp_path):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders["sd1"])
    with pytest.raises(ValueError, match="dtype.*'half'.*fp16, fp32 or None"):
        _export(pipe, tmp_path / "a", dtype="half")
    with pytest.raises(ValueError, match="scheduler_config.*'_class_name'"):
        _export(pipe, tmp_path / "b", scheduler={"num_train_timesteps": 1000})
    with pytest.raises(ValueError, match="no scheduler 'NoSuchScheduler'"):
        _export(pipe, tmp_path / "c", scheduler={"_class_name": "NoSuchScheduler"})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_previous_export_and_no_partial_folder(tiny_folders, tmp_path, monkeypatch):
    pipe = StableDiffusionPipeline.from_pretrained(tiny_folders["sd1"])
    out = _export(pipe, tmp_path / "model")
    previous = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}

    def crash_half_way(self, save_directory, **kwargs):
        (save_directory / "unet").mkdir(parents=True)
        (save_directory / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"\0" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StableDiffusionPipeline, "save_pretrained", crash_half_way)
    with pytest.raises(OSError, match="No space left"):
        _export(pipe, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == previous
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
