"""Hypernetworks in the model layer: the config keys (A1111's names) and their checks, A1111's
initialisation, the strength that applies only when sampling, and attaching to a real diffusers
UNet, where the networks transform the context of exactly the to_k / to_v inputs of their width."""

from __future__ import annotations

import pytest
import torch

from edlib.model.config import ConfigError, TrainConfig
from edlib.model.hypernetwork_layers import Hypernetwork, HypernetworkSpec, attach, detach, find_hypernetwork
from edlib.model.methods import METHODS
from edlib.model.models import load_models


def test_the_config_names_the_method_and_a1111s_settings():
    config = TrainConfig(data_root="d", method="hypernetwork", unet_lr=1e-5)
    assert "hypernetwork" in METHODS
    assert config.hypernetwork_layer_structure == [1.0, 2.0, 1.0] and config.hypernetwork_activation_func == "linear"
    assert config.hypernetwork_weight_initialization == "Normal" and config.hypernetwork_dropout_structure is None
    assert config.exports_at_end() == ("a1111-hypernetwork",)
    spec = HypernetworkSpec.from_config(
        TrainConfig(data_root="d", method="hypernetwork", hypernetwork_layer_structure=[1, 1.5, 2, 1], hypernetwork_dropout_structure=[0, 0.1, 0.2, 0])
    )
    assert spec.layer_structure == (1.0, 1.5, 2.0, 1.0) and spec.dropout_structure == (0.0, 0.1, 0.2, 0.0)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"hypernetwork_layer_structure": [2, 1]}, "hypernetwork_layer_structure: must start and end with 1"),
        ({"hypernetwork_activation_func": "gelu"}, "hypernetwork_activation_func: unknown value 'gelu'"),
        ({"hypernetwork_weight_initialization": "normal"}, "hypernetwork_weight_initialization: unknown value"),
        ({"hypernetwork_dropout_structure": [0, 0.3, 0.3, 0]}, "has 4 entries but hypernetwork_layer_structure has 3"),
        ({"hypernetwork_dropout_structure": [0.1, 0.3, 0]}, "must start and end with 0"),
        ({"hypernetwork_dropout_structure": [0, 1.0, 0]}, "below 1"),
        ({"text_encoder_lr": 1e-5}, "text_encoder_lr: a hypernetwork trains with the whole model frozen"),
        ({"unet_lr": 0.0}, "unet_lr: the hypernetwork trains at this rate"),
        ({"export_formats": ["single-file"]}, "exports as a1111-hypernetwork"),
        ({"fp8_base": True, "mixed_precision": "bf16"}, "fp8_base: is for LoRA"),
    ],
)
def test_bad_settings_are_clear_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_dict({"data_root": "d", "method": "hypernetwork", "unet_lr": 1e-5, **values})


def test_sd3_and_flux_are_refused_with_the_families_that_have_one(tiny_flux):
    from types import SimpleNamespace

    from edlib.model.methods.hypernetwork import HypernetworkMethod

    with pytest.raises(ConfigError, match="hypernetwork is for SD1.x, SD2.x and SDXL"):
        TrainConfig.from_dict({"data_root": "d", "model": str(tiny_flux), "method": "hypernetwork", "unet_lr": 1e-5})
    with pytest.raises(ValueError, match="hypernetwork is for SD1.x, SD2.x and SDXL .*not FLUX"):
        HypernetworkMethod(SimpleNamespace()).setup(load_models(tiny_flux))


def test_a1111_initialisation_starts_near_the_identity_and_follows_the_seed():
    spec = HypernetworkSpec(layer_structure=(1, 4, 1), is_layer_norm=True, activation_func="relu")
    a = Hypernetwork([256], spec).initialise(torch.Generator().manual_seed(1))
    b = Hypernetwork([256], spec).initialise(torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    key = a.networks(256)[0]
    linear, norm = key.linear[0], key.linear[2]
    assert isinstance(norm, torch.nn.LayerNorm)
    assert abs(linear.weight.std().item() - 0.01) < 0.001 and torch.equal(linear.bias, torch.zeros_like(linear.bias))
    assert abs(norm.weight.std().item() - 0.01) < 0.002  # A1111 gives LayerNorms "Normal" whatever the setting
    kaiming = Hypernetwork([256], HypernetworkSpec(weight_initialization="KaimingNormal")).initialise(torch.Generator().manual_seed(1))
    assert abs(kaiming.networks(256)[0].linear[0].weight.std().item() - (2 / 256) ** 0.5) < 0.01


def test_strength_applies_when_sampling_and_training_uses_one():
    hypernetwork = Hypernetwork([8], HypernetworkSpec()).initialise(torch.Generator().manual_seed(0))
    network = hypernetwork.networks(8)[0]
    with torch.no_grad():
        for layer in network.linear:
            layer.weight.fill_(0.1)
    x = torch.randn(1, 3, 8, generator=torch.Generator().manual_seed(1))
    hypernetwork.set_strength(0.25)
    delta_train = network.train()(x) - x
    delta_eval = network.eval()(x) - x
    assert torch.allclose(delta_eval, 0.25 * delta_train, atol=1e-6) and delta_train.abs().max() > 0.01


@pytest.fixture(scope="module")
def unet(tiny_sd1):
    return load_models(tiny_sd1).unet.eval()


def _run(unet, context):
    sample = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        return unet(sample, 10, encoder_hidden_states=context).sample


def test_attached_networks_change_to_k_and_to_v_inputs_of_their_width_only(unet):
    from diffusers.models.attention_processor import Attention

    width = unet.config.cross_attention_dim
    context = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(4))
    before = _run(unet, context)
    hypernetwork = Hypernetwork([width], HypernetworkSpec(activation_func="relu")).initialise(torch.Generator().manual_seed(2))
    seen = []
    attach(unet, hypernetwork)
    try:
        assert find_hypernetwork(unet) is hypernetwork and unet.edlib_hypernetwork is hypernetwork
        with pytest.raises(ValueError, match="already has a hypernetwork"):
            attach(unet, hypernetwork)
        probes = []
        for attention in (m for m in unet.modules() if isinstance(m, Attention)):
            for name in ("to_q", "to_k", "to_v"):
                probes.append(getattr(attention, name).register_forward_pre_hook(lambda m, a, name=name: seen.append((name, a[0].shape[-1]))))
        during = _run(unet, context)
        for probe in probes:
            probe.remove()
    finally:
        assert detach(unet) is hypernetwork
    assert not torch.equal(during, before)
    assert torch.equal(_run(unet, context), before)  # detached: the UNet is exactly as before
    assert find_hypernetwork(unet) is None and not hasattr(unet, "edlib_hypernetwork")
    assert ("to_k", width) in seen and ("to_v", width) in seen


def test_networks_at_zero_leave_the_unet_output_unchanged(unet):
    """x + linear(x) with linear == 0 is x: attaching must not disturb anything else."""
    width = unet.config.cross_attention_dim
    context = torch.randn(1, 77, width, generator=torch.Generator().manual_seed(5))
    before = _run(unet, context)
    hypernetwork = Hypernetwork([width], HypernetworkSpec())
    torch.nn.init.zeros_(hypernetwork.networks(width)[0].linear[1].weight)
    for network in hypernetwork.networks(width):
        for param in network.linear[-1].parameters():
            torch.nn.init.zeros_(param)
    attach(unet, hypernetwork)
    try:
        assert torch.allclose(_run(unet, context), before, atol=1e-6)
    finally:
        detach(unet)


def test_a_hypernetwork_of_another_model_family_is_refused(unet):
    with pytest.raises(ValueError, match=r"widths \[1024\].*another model family"):
        attach(unet, Hypernetwork([1024], HypernetworkSpec()))
    assert find_hypernetwork(unet) is None
