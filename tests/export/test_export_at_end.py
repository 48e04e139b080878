"""Exports written by the run itself when it ends (`export_formats`), from the modules in
memory: they must hold exactly what `edlib export RUN` writes from the final checkpoint
(EMA weights included), in each method's usual format."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from edlib.export import export_run
from edlib.model.checkpoint import load_checkpoint, resolve_checkpoint
from edlib.model.config import ConfigError
from edlib.model.trained import load_trained
from edlib.train.loop import train
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401


def _metadata(path) -> dict[str, str]:
    with safe_open(str(path), "pt") as file:
        return file.metadata()


def _same_tensors(a, b) -> bool:
    a, b = load_file(str(a)), load_file(str(b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_run_ends_with_a_single_file_equal_to_exporting_its_checkpoint(tiny_folders, tmp_path):
    data = make_data_root(tmp_path / "data")
    summary = train(tiny_config(tiny_folders["sd1"], data, tmp_path / "run", epochs=1, ema_decay=0.5))
    [written] = summary.exports
    assert written == tmp_path / "run" / "exports" / "run-step000002.safetensors"
    later = export_run(tmp_path / "run", "single-file", out=tmp_path / "later")
    assert _same_tensors(written, later[0])
    assert "exported single-file" in (tmp_path / "run" / "log.txt").read_text(encoding="utf-8")
    # The base model is named, its folder on this machine is not (kohya records a file name).
    assert _metadata(written)["base_model"] == "sd1" and str(tmp_path) not in str(_metadata(written))


def test_exports_hold_the_ema_weights_when_the_run_keeps_them(tiny_folders, tmp_path):
    """With EMA the samples show the EMA weights, so the exports and `load_trained` hand
    those out too; `ema=False` still gives the raw training weights."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_config(tiny_folders["sd1"], data, run, epochs=1, unet_lr=1e-2, ema_decay=0.5, export_formats=[]))
    assert not (run / "exports").exists()
    ema, raw = load_trained(run), load_trained(run, ema=False)
    ema_weights, raw_weights = ema.models.unet.state_dict(), raw.models.unet.state_dict()
    assert any(not torch.equal(ema_weights[k], raw_weights[k]) for k in raw_weights)
    shadow = load_checkpoint(resolve_checkpoint("latest", run)).state["ema"]["shadow_params"]
    assert all(torch.equal(p, s) for p, s in zip(ema.method.trainable_parameters(ema.models), shadow, strict=True))


def test_a_lora_run_ends_with_its_kohya_file_and_a_diffusers_folder_is_refused(tiny_folders, tmp_path):
    data = make_data_root(tmp_path / "data")
    settings = dict(method="lora", network_dim=4, network_alpha=2.0, conv_dim=2, unet_lr=1e-3, epochs=1, ema_decay=0.5)
    summary = train(tiny_config(tiny_folders["sd1"], data, tmp_path / "run", **settings))
    [written] = summary.exports
    assert written.name == "run-step000002-lora.safetensors"
    metadata = _metadata(written)
    assert metadata["ss_sd_model_name"] == "sd1" and metadata["base_model"] == "sd1"
    assert str(tiny_folders["sd1"].parent) not in str(metadata)
    assert _same_tensors(written, export_run(tmp_path / "run", "kohya-lora", out=tmp_path / "later")[0])
    with pytest.raises(ConfigError, match=r"export_formats: a 'lora' run exports as kohya-lora, peft-lora, not 'diffusers'"):
        tiny_config(tiny_folders["sd1"], data, tmp_path / "other", export_formats=["diffusers"], **settings)
    with pytest.raises(ConfigError, match=r"peft-lora: is offered for SD3/FLUX LoRAs; this model is SD "):
        tiny_config(tiny_folders["sd1"], data, tmp_path / "other", export_formats=["peft-lora"], **settings)


def test_a_failed_export_is_a_warning_and_the_run_stays_saved(tiny_folders, tmp_path):
    """A disk problem at the very end must not cost the run: the checkpoint is complete,
    the warning says how to export it again."""
    data = make_data_root(tmp_path / "data")
    run = tmp_path / "run"
    run.mkdir()
    (run / "exports").write_text("a file where the exports folder should be", encoding="utf-8")
    warnings = []
    summary = train(
        tiny_config(tiny_folders["sd1"], data, run, epochs=1, export_formats=["diffusers", "single-file"]),
        callbacks=[lambda event: warnings.append(event.data["message"]) if event.kind == "warning" else None],
    )
    assert summary.exports == [] and summary.last_checkpoint.is_dir()
    assert len(warnings) == 2 and all(f"retry with: edlib export {run} --format" in w for w in warnings)
    assert load_trained(run).step == 2  # the saved run is whole


def test_a_textual_inversion_run_ends_with_its_embedding(tiny_folders, tmp_path):
    data = make_data_root(tmp_path / "data")
    for image in data.rglob("*.png"):
        image.with_suffix(".txt").write_text(f"a photo of <zq>, {image.stem.split('_')[0]}", encoding="utf-8")
    settings = dict(
        method="textual_inversion", placeholder_tokens=[{"token": "<zq>", "init_word": "person", "num_vectors": 2}],
        text_encoder_lr=1e-2, unet_lr=0.0, epochs=1, ema_decay=0.5,
    )  # fmt: skip
    [written] = train(tiny_config(tiny_folders["sd1"], data, tmp_path / "run", **settings)).exports
    assert written.parent == tmp_path / "run" / "exports" and written.suffix == ".safetensors"
    [later] = export_run(tmp_path / "run", "a1111-embedding", out=tmp_path / "later")
    assert later.name == written.name and _same_tensors(written, later)


def test_a_hypernetwork_run_ends_with_its_a1111_file(tiny_folders, tmp_path):
    """The end-of-run export (EMA weights) equals exporting the final checkpoint; SD2's file
    is keyed by its context width like SD1's."""
    data = make_data_root(tmp_path / "data")
    settings = dict(method="hypernetwork", unet_lr=1e-2, epochs=1, ema_decay=0.5, hypernetwork_activation_func="relu")
    [written] = train(tiny_config(tiny_folders["sd2"], data, tmp_path / "run", **settings)).exports
    assert written == tmp_path / "run" / "exports" / "run-step000002.pt"
    [later] = export_run(tmp_path / "run", "a1111-hypernetwork", out=tmp_path / "later")
    ours, theirs = (torch.load(p, weights_only=True) for p in (written, later))
    assert list(ours) == list(theirs) and ours["step"] == 2 and ours["activation_func"] == "relu"
    (width,) = [key for key in ours if type(key) is int]
    for a, b in zip(ours[width], theirs[width], strict=True):
        assert list(a) == list(b) and all(torch.equal(a[k], b[k]) and a[k].dtype == torch.float16 for k in a)
    with pytest.raises(ConfigError, match=r"a 'hypernetwork' run exports as a1111-hypernetwork, not 'single-file'"):
        tiny_config(tiny_folders["sd2"], data, tmp_path / "other", export_formats=["single-file"], **settings)
