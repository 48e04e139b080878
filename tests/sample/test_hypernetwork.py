"""Sampling with a hypernetwork file: the `.pt` a hypernetwork run exports, applied to the base
model by edlib's sampler, draws exactly what the run drew with its live training modules
(SD1, SD2 and SDXL); older A1111 files load with A1111's defaults; anything else is refused
with a message naming the file, and loading never runs pickled code."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest
import torch
from PIL import Image

from edlib.sample import PromptSpec, apply_hypernetwork, load_pipeline, read_hypernetwork, sample_model
from edlib.train.loop import train
from tests.export.hypernetwork_clients import a1111_load
from tests.train.loop_support import make_data_root, one_torch_thread, tiny_config  # noqa: F401

STRENGTH = 0.6


def _pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("variant", ["tiny_sd1", "tiny_sd2v", "tiny_sdxl"])
def test_the_exported_file_samples_what_the_training_run_sampled(variant, request, tmp_path):
    model = request.getfixturevalue(variant)
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("defaults: {steps: 3, seed: 5}\nprompts: [red]\n", encoding="utf-8")
    config = tiny_config(
        model, make_data_root(tmp_path / "data"), tmp_path / "run", method="hypernetwork", unet_lr=5e-2, epochs=1,
        hypernetwork_weight_initialization="XavierNormal", hypernetwork_activation_func="softsign",
        hypernetwork_strength=STRENGTH, sample_prompts=str(prompts), export_dtype="fp32",
    )  # fmt: skip
    summary = train(config)
    [exported] = summary.exports
    width = load_pipeline(model).unet.config.cross_attention_dim
    assert exported.suffix == ".pt" and list(torch.load(exported, weights_only=True))[0] == width
    [during_training] = sorted((tmp_path / "run" / "samples" / f"step-{summary.step:06d}").glob("000-*.png"))

    specs = [PromptSpec("red", steps=3, seed=5)]
    [from_file] = sample_model(model, specs, tmp_path / "file", hypernetwork=exported, hypernetwork_strength=STRENGTH)
    [from_run] = sample_model(tmp_path / "run", specs, tmp_path / "from-run")
    [base] = sample_model(model, specs, tmp_path / "base")
    assert np.array_equal(_pixels(from_file), _pixels(during_training))
    assert np.array_equal(_pixels(from_run), _pixels(during_training))
    assert np.abs(_pixels(base) - _pixels(during_training)).max() > 10  # the hypernetwork changes the image
    with pytest.raises(ValueError, match="already has a hypernetwork"):
        apply_hypernetwork(load_pipeline(tmp_path / "run"), exported)


def _legacy_save(contents, path):
    torch.save(contents, path, _use_new_zipfile_serialization=False)
    return path


def test_an_older_a1111_file_loads_with_a1111s_defaults(tmp_path):
    """A file from before October 2022: `linear1`/`linear2` keys, no metadata at all."""
    generator = torch.Generator().manual_seed(0)

    def network():
        return OrderedDict(
            [
                ("linear1.weight", torch.randn(64, 32, generator=generator) * 0.1),
                ("linear1.bias", torch.randn(64, generator=generator) * 0.1),
                ("linear2.weight", torch.randn(32, 64, generator=generator) * 0.1),
                ("linear2.bias", torch.randn(32, generator=generator) * 0.1),
            ]
        )

    contents = {32: (network(), network()), "step": 10, "name": "old"}
    hypernetwork = read_hypernetwork(_legacy_save(contents, tmp_path / "old.pt"))
    assert hypernetwork.widths == [32] and hypernetwork.spec.layer_structure == (1.0, 2.0, 1.0)
    renamed = {32: tuple(OrderedDict((k.replace("linear1", "linear.0").replace("linear2", "linear.1"), v) for k, v in n.items()) for n in contents[32])}
    reference = a1111_load(renamed)[32]
    context = torch.randn(1, 5, 32, generator=generator)
    with torch.no_grad():
        for ours, theirs in zip(hypernetwork.networks(32), reference):
            assert torch.allclose(ours(context), theirs(context), atol=1e-6)


class _Trap:
    """Unpickling this would touch a file: a stand-in for code hidden in a malicious .pt."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def test_files_that_are_not_hypernetworks_are_refused_without_running_code(tiny_sd1, tmp_path):
    marker = tmp_path / "code-ran"
    for legacy in (True, False):
        trap = tmp_path / "trap.pt"
        torch.save({768: _Trap(marker), "name": "trap"}, trap, _use_new_zipfile_serialization=not legacy)
        with pytest.raises(ValueError, match=r"trap\.pt: not a readable hypernetwork file"):
            read_hypernetwork(trap)
        assert not marker.exists()
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match=r"text\.pt: not a readable hypernetwork file"):
        read_hypernetwork(tmp_path / "text.pt")

    with pytest.raises(ValueError, match=r"empty\.pt: holds no networks"):
        read_hypernetwork(_legacy_save({"768": "not an int key", "name": "x"}, tmp_path / "empty.pt"))
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        read_hypernetwork(tmp_path / "missing.pt")

    from edlib.export.a1111_hypernetwork import export_a1111_hypernetwork
    from edlib.model.hypernetwork_layers import Hypernetwork, HypernetworkSpec

    sd2 = export_a1111_hypernetwork(Hypernetwork([1024], HypernetworkSpec()), tmp_path / "sd2.pt", step=0, base_model="m")
    with pytest.raises(ValueError, match=r"sd2\.pt: .*widths \[1024\].*another model family"):
        apply_hypernetwork(load_pipeline(tiny_sd1), sd2)
    bad = {32: (OrderedDict(x=torch.zeros(1)), OrderedDict()), "layer_structure": [1, 2, 1]}
    with pytest.raises(ValueError, match=r"bad\.pt: the key network of width 32 does not match"):
        read_hypernetwork(_legacy_save(bad, tmp_path / "bad.pt"))


def test_a_hypernetwork_run_trained_in_bf16_samples_afterwards(tiny_sd1, tmp_path):
    """The frozen UNet stays in the run's bf16 beside the fp32 hypernetwork, as it trained; the
    run's pipeline samples under the same autocast (or fp32 prompts would meet a bf16 UNet)."""
    config = tiny_config(
        tiny_sd1, make_data_root(tmp_path / "data"), tmp_path / "run", method="hypernetwork", unet_lr=1e-3,
        mixed_precision="bf16", epochs=1, export_formats=[],
    )  # fmt: skip
    train(config)
    [image] = sample_model(tmp_path / "run", [PromptSpec("red", steps=2)], tmp_path / "samples")
    assert image.is_file()
