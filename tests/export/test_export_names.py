"""What an export is called, and that a single file finds its model family again: an fp32
export and an fp16 one of the same step sit side by side (issue 19), and a single file
exported by a run samples offline without --config (the run's config names its base)."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from edlib.export import export_run
from edlib.sample.pipeline import load_pipeline
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401


@pytest.fixture(scope="module")
def run(tiny_folders, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("names")
    data = make_data_root(tmp / "data")
    train(tiny_config(tiny_folders["sd1"], data, tmp / "run", epochs=1, export_formats=[]))
    return tmp / "run"


def test_fp32_and_fp16_exports_of_a_step_do_not_replace_each_other(run):
    [fp16] = export_run(run, "single-file", dtype="fp16")
    [fp32] = export_run(run, "single-file", dtype="fp32")
    assert (fp16.name, fp32.name) == ("run-step000002.safetensors", "run-step000002-fp32.safetensors")
    assert {t.dtype for t in load_file(str(fp16)).values()} == {torch.float16}
    assert {t.dtype for t in load_file(str(fp32)).values()} == {torch.float32}
    [folder16] = export_run(run, "diffusers", dtype="fp16")
    [folder32] = export_run(run, "diffusers", dtype="fp32")
    assert folder16 != folder32 and folder16.is_dir() and folder32.is_dir()


def test_a_runs_single_file_samples_offline_without_config(run, tmp_path):
    [exported] = export_run(run, "single-file", dtype="fp32")
    pipeline = load_pipeline(exported)  # HF_HUB_OFFLINE=1 (tests/conftest.py): configs come from the run's base
    assert pipeline.unet.config.sample_size == load_pipeline(run).unet.config.sample_size

    stranger = tmp_path / "from-elsewhere.safetensors"  # no run beside it, no metadata naming a base
    save_file(load_file(str(exported)), str(stranger))
    with pytest.raises(ValueError, match=r"from-elsewhere.safetensors: a single file holds weights only.*--config"):
        load_pipeline(stranger)
